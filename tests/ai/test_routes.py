"""The model's HTTP routes, as the openai SDK, httpx and httpx-sse see them, mock and relay."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from sse_server import App
from sse_server.ai import ChatService, install_llm
from sse_server.ai.mockmodel import MOCK_MODEL, mock_complete, tokenize
from sse_server.ai.wire import MAX_CHAT_BODY_BYTES
from tests.ai.helpers import (
    MESSAGES,
    PROMPT,
    Serve,
    fake_upstream,
    llm_config,
    read_events,
    sdk,
    sdk_stream_text,
    service,
    sse_events,
    tokens_text,
)


def test_install_llm_builds_the_service_from_its_config() -> None:
    """install_llm builds the service at once from the Config it is given, before any server starts."""
    app = App()
    chat = install_llm(app, llm_config(model_first_token_ms=250, model_tokens_per_s=4, upstream_url="http://h:1"))
    assert isinstance(chat, ChatService) and app.state["llm"] is chat
    assert (chat.first_token_s, chat.interval_s) == (0.25, 0.25)
    assert chat.endpoint is not None and chat.endpoint.url == "http://h:1/v1"
    assert app.on_startup == []  # nothing left to do at start-up


async def test_sdk_stream_and_non_stream_give_the_same_text(serve: Serve) -> None:
    """The openai SDK gets one text streamed and not streamed, shaped like the real API."""
    server = await serve()
    async with sdk(server) as client:
        text, chunks = await sdk_stream_text(client, model=MOCK_MODEL, messages=MESSAGES)
        whole = await client.chat.completions.create(model=MOCK_MODEL, messages=MESSAGES)
    expected = mock_complete(MESSAGES)
    assert text == whole.choices[0].message.content == expected.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.model == MOCK_MODEL and c.object == "chat.completion.chunk" and c.created > 0 for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "stop"]
    assert whole.choices[0].finish_reason == "stop" and whole.usage is not None
    assert whole.usage.completion_tokens == len(expected.tokens)
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


async def test_sdk_stream_usage_and_max_tokens(serve: Serve) -> None:
    """include_usage adds a last usage chunk; max_tokens cuts the answer with finish_reason "length"."""
    server = await serve()
    async with sdk(server) as client:
        _, chunks = await sdk_stream_text(client, model=MOCK_MODEL, messages=MESSAGES,
                                          stream_options={"include_usage": True})
        short, short_chunks = await sdk_stream_text(client, model=MOCK_MODEL, messages=MESSAGES, max_tokens=4)
        whole = await client.chat.completions.create(model=MOCK_MODEL, messages=MESSAGES, max_completion_tokens=4)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert short == "".join(mock_complete(MESSAGES).tokens[:4]) == whole.choices[0].message.content
    assert short_chunks[-1].choices[0].finish_reason == "length" == whole.choices[0].finish_reason


async def test_models_endpoint(serve: Serve) -> None:
    """/v1/models lists the mock model and an unknown model is a 404 NotFoundError."""
    server = await serve()
    async with sdk(server) as client:
        models = [m.id async for m in client.models.list()]
        assert models == [MOCK_MODEL]
        assert (await client.models.retrieve(MOCK_MODEL)).id == MOCK_MODEL
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


async def test_bad_requests_get_openai_error_json(serve: Serve) -> None:
    """Bad JSON, wrong types, oversized bodies and unknown jobs get OpenAI's error shape and status."""
    server = await serve()
    async with httpx.AsyncClient(base_url=server.url) as http:
        cases = [
            (await http.post("/v1/chat/completions", content=b"{nope"), 400, "invalid_json"),
            (await http.post("/v1/chat/completions", json={"model": MOCK_MODEL}), 400, "missing_required_parameter"),
            (await http.post("/v1/chat/completions", json={"model": MOCK_MODEL, "messages": {}}), 400, "invalid_type"),
            (await http.post("/v1/chat/completions", json={"model": "gpt-x", "messages": MESSAGES}), 404,
             "model_not_found"),
            (await http.post("/v1/chat/completions", content=b"[" + b" " * MAX_CHAT_BODY_BYTES + b"]"), 413,
             "request_too_large"),
            (await http.get("/chat/streams/gen_nothing"), 404, "stream_not_found"),
            (await http.post("/chat/streams/gen_nothing/cancel"), 404, "stream_not_found"),
            (await http.get("/chat/stream"), 400, "missing_required_parameter"),
            (await http.get("/chat/stream", params={"prompt": "x", "max_tokens": "many"}), 400, "invalid_type"),
            (await http.post("/chat/streams", json={"messages": "hi"}), 400, "invalid_type"),
        ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == code


async def test_a_declared_oversized_body_is_refused_before_it_is_read(serve: Serve) -> None:
    """A Content-Length over MAX_CHAT_BODY_BYTES (but within the server's limit) gets OpenAI's 413 unread."""
    server = await serve()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n{"
                     % (MAX_CHAT_BODY_BYTES + 1))  # the rest of the body is never sent
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            body = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 ") and body["error"]["code"] == "request_too_large"
    assert str(MAX_CHAT_BODY_BYTES) in body["error"]["message"]


async def test_lone_surrogates_in_a_prompt_are_harmless(serve: Serve) -> None:
    """A prompt holding a lone surrogate (legal in JSON, not in UTF-8) still gets a clean answer."""
    server = await serve()
    body = b'{"model": "%s", "stream": true, "messages": [{"role": "user", "content": "caf\\ud800 latte"}]}' % (
        MOCK_MODEL.encode())
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/chat/completions", content=body)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert service(server).stats.failed == 0


async def test_eventsource_named_events(serve: Serve) -> None:
    """GET /chat/stream gives token events then done, readable with httpx-sse."""
    server = await serve()
    async with (
        httpx.AsyncClient(base_url=server.url) as http,
        aconnect_sse(http, "GET", "/chat/stream", params={"prompt": PROMPT}) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = await sse_events(source)
    assert {e.event for e in events} == {"token", "done"} and events[-1].event == "done"
    assert "".join(json.loads(e.data)["content"] for e in events[:-1]) == mock_complete(MESSAGES).text
    assert json.loads(events[-1].data)["finish_reason"] == "stop"
    assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    # An EventSource reconnecting to this one-shot stream is told to stop, not given a new answer.
    async with httpx.AsyncClient(base_url=server.url) as http:
        again = await http.get("/chat/stream", params={"prompt": PROMPT}, headers={"Last-Event-ID": "3"})
    assert again.status_code == 204 and service(server).stats.started == 1


async def test_relay_matches_the_upstream(serve: Serve) -> None:
    """Through a relay, the SDK gets the upstream's chunks verbatim, streamed or not, and its errors."""
    upstream = await serve()
    relay = await serve(upstream_url=upstream.url)
    async with (
        sdk(upstream) as direct,
        sdk(relay) as relayed,
    ):
        text, chunks = await sdk_stream_text(relayed, model=MOCK_MODEL, messages=MESSAGES,
                                             stream_options={"include_usage": True})
        whole = await relayed.chat.completions.create(model=MOCK_MODEL, messages=MESSAGES)
        assert [m.id async for m in relayed.models.list()] == [MOCK_MODEL]
        with pytest.raises(openai.NotFoundError):
            await relayed.chat.completions.create(model="no-such-model", messages=MESSAGES, stream=True)
        direct_text, _ = await sdk_stream_text(direct, model=MOCK_MODEL, messages=MESSAGES)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        smuggle = await http.get("/v1/models/x%0d%0aX-Injected:%201")  # quoted on the way up, not split
    assert smuggle.status_code == 404 and smuggle.json()["error"]["code"] == "model_not_found"
    assert text == whole.choices[0].message.content == direct_text == mock_complete(MESSAGES).text
    assert chunks[-1].usage is not None and chunks[-2].choices[0].finish_reason == "stop"
    assert service(relay).stats.finished == 1 and service(upstream).stats.finished == 3


async def test_relay_eventsource_and_jobs(serve: Serve) -> None:
    """The named-event stream and resumable jobs work over a relay too."""
    upstream = await serve()
    relay = await serve(upstream_url=upstream.url)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        async with aconnect_sse(http, "GET", "/chat/stream", params={"prompt": PROMPT, "model": MOCK_MODEL}) as source:
            events = await sse_events(source)
        async with http.stream("POST", "/chat/streams", json={"model": MOCK_MODEL, "messages": MESSAGES}) as r:
            job_events = await read_events(r)
    expected = mock_complete(MESSAGES).text
    assert "".join(json.loads(e.data)["content"] for e in events if e.event == "token") == expected
    assert tokens_text(job_events) == expected
    done = json.loads(job_events[-1].data)
    assert done["finish_reason"] == "stop" and done["usage"]["completion_tokens"] == len(tokenize(expected))


async def test_relay_needs_a_model_name(serve: Serve) -> None:
    """A relay has no default model: /chat/stream without one is a 400 naming the missing model."""
    upstream = await serve()
    relay = await serve(upstream_url=upstream.url)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        response = await http.get("/chat/stream", params={"prompt": PROMPT})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    assert service(upstream).stats.started == 0


async def test_relay_paths_cannot_climb_out_of_the_base_path(serve: Serve) -> None:
    """A model named ".." in any spelling never reaches the upstream; other names arrive encoded as one segment."""
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    async with fake_upstream(record, read_request=False) as url:
        relay = await serve(upstream_url=url)
        async with httpx.AsyncClient(base_url=relay.url) as http:
            climbs = [await http.get(path) for path in ("/v1/models/%2e%2e", "/v1/models/%2E", "/v1/models/..%2f")]
            named = await http.get("/v1/models/a%2f..%2fb")
    assert [r.status_code for r in climbs[:2]] == [404, 404]
    assert all(r.json()["error"]["code"] == "model_not_found" for r in climbs[:2])
    assert named.status_code == 200 and seen[-1] == b"GET /v1/models/a%2F..%2Fb HTTP/1.1"
    assert not any(b"/models/.. " in line or b"/models/. " in line for line in seen), seen


async def test_relay_errors_name_no_upstream_address(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable upstream is a 502 whose body says what failed but not where; the log has the address."""
    async with fake_upstream(lambda r, w: asyncio.sleep(0)) as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
    relay = await serve(upstream_url=url)  # nobody listens there any more
    async with httpx.AsyncClient(base_url=relay.url) as http:
        answers = [await http.get("/v1/models"),
                   await http.post("/v1/chat/completions", json={"model": MOCK_MODEL, "messages": MESSAGES})]
    for answer in answers:
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_unreachable"
        assert "127.0.0.1" not in answer.text and port not in answer.text, answer.text
    assert any(port in r.getMessage() for r in caplog.records)
