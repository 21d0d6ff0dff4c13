"""The mock model, its OpenAI-compatible API, the upstream relay and resumable generations.

Servers are real listeners on 127.0.0.1:0 in the test's loop; the official openai SDK,
httpx and httpx-sse talk to them. Fake upstreams that fail on purpose are raw asyncio
servers, so each failure (500, a cut stream, silence) is exactly the one named.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse
from openai import AsyncOpenAI

from sse_server.app import App
from sse_server.demo import create_app
from sse_server.http11 import ChunkedDecoder
from sse_server.ai import MOCK_MODEL, APIError, ChatService, install_llm, parse_chat_request
from sse_server.ai.wire import MAX_CHAT_BODY_BYTES
from sse_server.ai.mockmodel import mock_complete, tokenize
from sse_server.config import Config
from tests.conftest import FAST_CONFIG
from sse_server.server import Server
from sse_server.sse import Event, EventStreamParser
from sse_server.ai.upstream import (
    Endpoint,
    UpstreamError,
    body_framing,
    encode_request_head,
    parse_response_head,
)

# On top of conftest.FAST_CONFIG: fast pacing keeps a whole answer to a few milliseconds.
LLM_CONFIG: dict[str, Any] = {
    "access_log": False, "model_first_token_ms": 1, "model_tokens_per_s": 5000,
    "upstream_connect_timeout_s": 2, "upstream_first_byte_timeout_s": 2, "upstream_idle_timeout_s": 2,
}  # fmt: skip
PROMPT = "How do I keep <b>streaming</b> answers fast & safe?"
MESSAGES = [{"role": "user", "content": PROMPT}]


# -- helpers -----------------------------------------------------------------------------


Serve = Callable[..., Awaitable[Server]]


@pytest.fixture
def serve(start_server: Callable[..., Awaitable[Server]]) -> Serve:
    """``await serve(app=None, **config)``: the demo app (or ``app``) on 127.0.0.1:0, stopped after the test."""

    async def start(app: App | None = None, **overrides: Any) -> Server:
        cfg = {**LLM_CONFIG, **overrides}
        return await start_server(app or create_app(Config(**{**FAST_CONFIG, **cfg})), **cfg)

    return start


def service(server: Server) -> ChatService:
    return server.app.state["llm"]


def sdk(server: Server) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0, timeout=10)


async def eventually(check: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Wait until ``check()`` holds (state changed by the server's own timers)."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


async def sdk_stream_text(client: AsyncOpenAI, **kwargs: Any) -> tuple[str, list[Any]]:
    chunks = [c async for c in await client.chat.completions.create(stream=True, **kwargs)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


async def read_events(response: httpx.Response) -> list[Event]:
    parser = EventStreamParser()
    events: list[Event] = []
    async for piece in response.aiter_bytes():
        events += parser.feed(piece)
    return events


async def sse_events(source: Any) -> list[Event]:
    """httpx-sse's events, without the empty one it dispatches for a lone ``retry:`` block
    (WHATWG parsers dispatch nothing when the data buffer is empty)."""
    return [Event(e.data, e.event, e.id) async for e in source.aiter_sse() if e.data or e.event != "message"]


def tokens_text(events: list[Event]) -> str:
    return "".join(json.loads(e.data)["content"] for e in events if e.event == "token")


class RawStream:
    """One request on a raw socket, so a test can cut the connection exactly when it wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""

    @classmethod
    async def open(cls, server: Server, method: str, path: str, body: object = None,
                   headers: dict[str, str] | None = None) -> RawStream:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        data = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(data)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        return cls(reader, writer)

    async def read_until(self, marker: bytes, after: int = 0, timeout_s: float = 3.0) -> None:
        async with asyncio.timeout(timeout_s):
            while self.received.find(marker, after) < 0:
                piece = await self.reader.read(65536)
                assert piece, f"closed before {marker!r}: {self.received[-200:]!r}"
                self.received += piece

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def fake_upstream(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw upstream: reads one request head and body, then ``answer`` writes anything."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/v1"
    finally:
        listener.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk_event(content: str) -> bytes:
    obj = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    event = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%b\r\n" % (len(event), event)


async def answer_500(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b'{"error": {"message": "the model is on fire", "type": "server_error", "param": null, "code": null}}'
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    await writer.drain()


async def answer_then_cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(sse_head() + chunk_event("Hello") + chunk_event(" wor"))
    await writer.drain()
    writer.transport.abort()  # mid-stream, no [DONE], no last chunk


async def answer_never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # holds the request until the relay gives up and closes


async def answer_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(sse_head() + chunk_event("Hello"))
    await writer.drain()
    await reader.read()


async def check_failure(relay: Server, status: int, code: str, partial: str) -> None:
    """Each API variant of ``relay`` ends with the error ``code`` after the text ``partial``."""
    async with sdk(relay) as client, httpx.AsyncClient(base_url=relay.url, timeout=5) as http:
        # The OpenAI stream: a status error before any byte, else an error chunk after the tokens.
        received = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in await client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                received.append(chunk.choices[0].delta.content or "")
        assert "".join(received) == partial
        if isinstance(info.value, openai.APIStatusError):
            assert info.value.status_code == status and not partial
        assert info.value.body["code"] == code  # type: ignore[index]
        # Not streamed: a JSON error with the status.
        response = await http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
        assert response.status_code == status and response.json()["error"]["code"] == code
        # EventSource: the tokens, then an error event, then the end of the response.
        async with aconnect_sse(http, "GET", "/chat/stream", params={"prompt": PROMPT, "model": "m"}) as source:
            events = await sse_events(source)
        assert events[-1].event == "error" and json.loads(events[-1].data)["code"] == code
        assert "".join(json.loads(e.data)["content"] for e in events[:-1]) == partial


# -- pure pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "Hello, streaming world!", "a\n\n  b\tc <b>x</b> &amp; 12345 é😀", "   "])
def test_tokenize_round_trips(text: str) -> None:
    """Joining the tokens gives the text back exactly."""
    assert "".join(tokenize(text)) == text


def test_mock_is_deterministic_and_varied() -> None:
    """The same conversation gets the same answer; different prompts get different ones, some with markup."""
    assert mock_complete(MESSAGES).text == mock_complete([dict(m) for m in MESSAGES]).text
    answers = {mock_complete([{"role": "user", "content": f"tell me about topic {i} and caching"}]).text
               for i in range(20)}
    assert len(answers) == 20
    assert any("<" in a for a in answers) and any("**" in a or "`" in a for a in answers)
    assert mock_complete(MESSAGES, max_tokens=3).finish_reason == "length"
    assert len(mock_complete(MESSAGES, max_tokens=3).tokens) == 3


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ([], 400, None, "invalid_type"),
        ({"model": MOCK_MODEL}, 400, "messages", "missing_required_parameter"),
        ({"messages": MESSAGES}, 400, "model", "missing_required_parameter"),
        ({"model": MOCK_MODEL, "messages": "hi"}, 400, "messages", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": []}, 400, "messages", "invalid_value"),
        ({"model": MOCK_MODEL, "messages": [{"content": "x"}]}, 400, "messages[0].role", "missing_required_parameter"),
        ({"model": MOCK_MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role",
         "invalid_value"),
        ({"model": MOCK_MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content",
         "invalid_type"),
        ({"model": 3, "messages": MESSAGES}, 400, "model", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "stream": "yes"}, 400, "stream", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "max_tokens": "9"}, 400, "max_tokens", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "n": 2}, 400, "n", "invalid_value"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "stream_options": {"include_usage": True}}, 400,
         "stream_options", "invalid_value"),
    ],
)
def test_parse_chat_request_rejects(body: object, status: int, param: str | None, code: str) -> None:
    """Malformed chat bodies raise APIError with OpenAI's param and code."""
    with pytest.raises(APIError) as info:
        parse_chat_request(body)
    assert (info.value.status, info.value.error["param"], info.value.error["code"]) == (status, param, code)


def test_parse_chat_request_accepts_content_parts() -> None:
    """Content-part arrays contribute their text parts; max_completion_tokens wins over max_tokens."""
    chat = parse_chat_request({"model": "m", "max_tokens": 9, "max_completion_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None}]})
    assert chat.messages == [{"role": "user", "content": "a\nb"}, {"role": "assistant", "content": ""}]
    assert chat.max_tokens == 4


def test_response_head_and_framing() -> None:
    """Response heads parse to status and headers; framing follows RFC 9112 §6.3."""
    status, headers = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    assert (status, body_framing("POST", status, headers)) == (200, ("chunked", 0))
    assert body_framing("GET", 200, [("content-length", "12")]) == ("length", 12)
    assert body_framing("GET", 200, []) == ("close", 0)
    assert body_framing("GET", 204, []) == ("none", 0)
    for bad in (b"SSH-2.0", b"HTTP/1.1 2000 OK", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(UpstreamError):
            parse_response_head(bad)
    with pytest.raises(UpstreamError):
        body_framing("GET", 200, [("content-length", "1, 2")])
    assert Endpoint.parse("http://127.0.0.1:9").base_path == "/v1"
    assert Endpoint.parse("https://h/x/v1/").authority == "h"
    with pytest.raises(ValueError):
        Endpoint.parse("ftp://h")


def test_request_head_refuses_line_breaks() -> None:
    """A CR, LF or space from a path parameter or a key cannot split the upstream request."""
    endpoint = Endpoint.parse("http://h")
    assert encode_request_head(endpoint, "GET", "/models/m", [("Authorization", "Bearer k")], 0).startswith(
        b"GET /v1/models/m HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k\r\n")
    for path, headers in (("/models/a\r\nX: 1", []), ("/models/a b", []), ("/m", [("Authorization", "k\r\nX: 1")])):
        with pytest.raises(ValueError):
            encode_request_head(endpoint, "GET", path, headers, 0)


# -- the mock over HTTP --------------------------------------------------------------------------


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
            (await http.get("/chat/stream"), 400, "missing_required_parameter"),
            (await http.post("/chat/streams", json={"messages": "hi"}), 400, "invalid_type"),
        ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == code


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


async def test_pacing_is_kept(serve: Serve) -> None:
    """Tokens arrive at the configured pace: the first after the latency, then one per interval."""
    server = await serve(model_first_token_ms=50, model_tokens_per_s=100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with (
        httpx.AsyncClient(base_url=server.url) as http,
        aconnect_sse(http, "GET", "/chat/stream", params={"prompt": PROMPT, "max_tokens": "11"}) as s,
    ):
        times = [loop.time() - start async for e in s.aiter_sse() if e.event == "token"]
    assert len(times) == 11
    # Lower bounds are the contract (never early); upper bounds leave room for a busy CI box.
    assert 0.045 <= times[0] < 0.5
    assert 0.09 <= times[-1] - times[0] < 0.5  # ten intervals of 10 ms


async def test_client_leaving_cancels_the_generation(serve: Serve) -> None:
    """A client that disconnects mid-stream cancels its mock generation at once."""
    server = await serve(model_tokens_per_s=50)
    stream = await RawStream.open(server, "POST", "/v1/chat/completions",
                                  {"model": MOCK_MODEL, "messages": MESSAGES, "stream": True})
    await stream.read_until(b'"content":"')
    await stream.close()
    await eventually(lambda: service(server).stats.cancelled == 1)
    assert service(server).stats.finished == 0


# -- the relay -----------------------------------------------------------------------------------


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
    async with (
        httpx.AsyncClient(base_url=relay.url) as http,
    ):
        async with aconnect_sse(http, "GET", "/chat/stream", params={"prompt": PROMPT, "model": MOCK_MODEL}) as source:
            events = await sse_events(source)
        async with http.stream("POST", "/chat/streams", json={"model": MOCK_MODEL, "messages": MESSAGES}) as r:
            job_events = await read_events(r)
    expected = mock_complete(MESSAGES).text
    assert "".join(json.loads(e.data)["content"] for e in events if e.event == "token") == expected
    assert tokens_text(job_events) == expected
    done = json.loads(job_events[-1].data)
    assert done["finish_reason"] == "stop" and done["usage"]["completion_tokens"] == len(tokenize(expected))


async def test_relay_disconnect_cancels_the_upstream(serve: Serve) -> None:
    """A client leaving a relayed stream closes the upstream request, which cancels its generation."""
    upstream = await serve(model_tokens_per_s=50)
    relay = await serve(upstream_url=upstream.url)
    stream = await RawStream.open(relay, "POST", "/v1/chat/completions",
                                  {"model": MOCK_MODEL, "messages": MESSAGES, "stream": True})
    await stream.read_until(b'"content":"')
    await stream.close()
    await eventually(lambda: service(upstream).stats.cancelled == 1, timeout_s=1.0)
    assert service(relay).stats.cancelled == 1
    assert service(upstream).stats.finished == 0


@pytest.mark.parametrize(
    ("answer", "status", "code", "partial"),
    [
        (answer_500, 502, "upstream_status_500", ""),
        (answer_then_cut, 502, "upstream_closed", "Hello wor"),
        (answer_never, 504, "upstream_timeout", ""),
        (answer_then_silence, 504, "upstream_idle_timeout", "Hello"),
    ],
)
async def test_upstream_failures_reach_the_client_cleanly(
    serve: Serve,
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    status: int, code: str, partial: str,
) -> None:
    """An upstream 500, cut stream, or silence ends each API variant with a clean error, never a hang."""
    async with fake_upstream(answer) as url:
        relay = await serve(upstream_url=url, upstream_first_byte_timeout_s=0.3, upstream_idle_timeout_s=0.3)
        await check_failure(relay, status, code, partial)


async def test_unreachable_upstream(serve: Serve) -> None:
    """A relay whose upstream refuses connections answers 502 upstream_unreachable."""
    async with fake_upstream(answer_never) as url:
        pass  # the port is closed again
    relay = await serve(upstream_url=url)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"


async def test_shutdown_ends_streams_with_an_error(serve: Serve) -> None:
    """A server stopping mid-answer ends the stream with an error chunk, not a silent cut."""
    server = await serve(model_tokens_per_s=50)
    stream = await RawStream.open(server, "POST", "/v1/chat/completions",
                                  {"model": MOCK_MODEL, "messages": MESSAGES, "stream": True})
    await stream.read_until(b'"content":"')
    await server.shutdown()
    await stream.read_until(b"\r\n0\r\n\r\n")  # the chunked body's proper end
    assert b'data: {"error":{"message":"the server is shutting down"' in stream.received
    assert b"[DONE]" not in stream.received
    await stream.close()
    assert service(server).stats.cancelled == 1


# -- resumable generations -------------------------------------------------------------------------


async def test_job_post_streams_with_ids_and_ends(serve: Serve) -> None:
    """POST /chat/streams streams start, tokens and done with broker ids, names the job, then ends."""
    server = await serve()
    async with (
        httpx.AsyncClient(base_url=server.url) as http,
        http.stream("POST", "/chat/streams", json={"messages": MESSAGES}) as response,
    ):
        events = await read_events(response)
        job_id = response.headers["chat-stream-id"]
        assert response.headers["location"] == f"/chat/streams/{job_id}"
    assert events[0].event == "start" and json.loads(events[0].data)["id"] == job_id
    assert events[-1].event == "done" and json.loads(events[-1].data)["finish_reason"] == "stop"
    assert tokens_text(events) == mock_complete(MESSAGES).text
    seqs = [int(e.id.rsplit("-", 1)[1]) for e in events]
    assert seqs == list(range(1, len(events) + 1))


async def test_job_resume_after_a_cut_gives_every_token_once(serve: Serve) -> None:
    """A client cut mid-generation resumes with Last-Event-ID: every token exactly once, no restart."""
    server = await serve(model_tokens_per_s=300)
    async with httpx.AsyncClient(base_url=server.url) as http:
        started = await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})
        assert started.status_code == 202
        job_id = started.json()["id"]
        stream = await RawStream.open(server, "GET", f"/chat/streams/{job_id}")
        await stream.read_until(b"event: token\ndata: ")
        await stream.read_until(b"\n\n", after=stream.received.rindex(b"event: token"))
        await stream.close()  # cut mid-generation
        body = stream.received.split(b"\r\n\r\n", 1)[1]
        first = EventStreamParser().feed(ChunkedDecoder().feed(body))
        assert first[-1].event == "token" and job_id in service(server).jobs
        assert service(server).jobs[job_id].running
        async with aconnect_sse(http, "GET", f"/chat/streams/{job_id}",
                                headers={"Last-Event-ID": first[-1].id}) as source:
            rest = await sse_events(source)
        # A second late reader without an id gets the whole history, then the end.
        async with aconnect_sse(http, "GET", f"/chat/streams/{job_id}") as source:
            replay = await sse_events(source)
    events = first + rest
    assert [e.id for e in events] == [e.id for e in replay]
    assert len({e.id for e in events}) == len(events)
    assert tokens_text(events) == mock_complete(MESSAGES).text
    assert service(server).stats.started == 1 and service(server).stats.finished == 1


async def test_job_keeps_generating_without_a_client(serve: Serve) -> None:
    """A job whose client dropped finishes anyway; a later GET replays it all and ends."""
    server = await serve()
    async with httpx.AsyncClient(base_url=server.url) as http:
        started = await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})
        job = service(server).jobs[started.json()["id"]]
        await eventually(lambda: job.state == "done")
        async with http.stream("GET", f"/chat/streams/{job.id}") as response:
            events = await read_events(response)
    assert tokens_text(events) == mock_complete(MESSAGES).text and events[-1].event == "done"


@pytest.mark.parametrize("how", ["POST cancel", "DELETE"])
async def test_job_cancel_stops_generation_and_ends_streams(serve: Serve, how: str) -> None:
    """The stop button's request cancels the job: subscribers get done (cancelled) and their streams end."""
    server = await serve(model_tokens_per_s=20)
    async with httpx.AsyncClient(base_url=server.url) as http:
        async with http.stream("POST", "/chat/streams", json={"messages": MESSAGES}) as response:
            job_id = response.headers["chat-stream-id"]
            parser, events = EventStreamParser(), []
            async for piece in response.aiter_bytes():
                events += parser.feed(piece)
                if any(e.event == "token" for e in events) and not any(e.event == "done" for e in events):
                    if how == "DELETE":
                        stopped = await http.delete(f"/chat/streams/{job_id}")
                    else:
                        stopped = await http.post(f"/chat/streams/{job_id}/cancel")
                    assert stopped.json()["state"] == "cancelled"
        assert json.loads(events[-1].data) == {"finish_reason": "cancelled", "usage": None}
        assert service(server).stats.cancelled == 1
        assert len(tokens_text(events)) < len(mock_complete(MESSAGES).text)


async def test_job_nobody_watches_is_cancelled_then_forgotten(serve: Serve) -> None:
    """A job with no subscriber for the idle limit is cancelled; a finished job is forgotten after retention."""
    app = App()
    install_llm(app, Config(**{**FAST_CONFIG, **LLM_CONFIG, "model_tokens_per_s": 20}), job_idle_cancel_s=0.2, job_retention_s=0.4, max_jobs=2)
    server = await serve(app, model_tokens_per_s=20)
    async with httpx.AsyncClient(base_url=server.url) as http:
        async def start() -> httpx.Response:
            return await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})

        first, second = (await start()).json()["id"], (await start()).json()["id"]
        full = await start()
        assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_generations"
        job = service(server).jobs[first]
        await eventually(lambda: job.state == "cancelled", timeout_s=2)
        assert (await start()).status_code == 202  # room again: a finished job makes way
        assert first not in service(server).jobs
        await eventually(lambda: second not in service(server).jobs, timeout_s=3)
        assert (await http.get(f"/chat/streams/{second}")).status_code == 404
