"""Runs and their streams: the Pacer's timing, cancellation, relay failures, shutdown.

Pacer tests drive MockRun with a recording listener on the test's loop; the rest go
through a real server on 127.0.0.1:0, since what they check is what a client sees.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from sse_server.ai.generation import MockRun, Pacer, Stats
from sse_server.ai.mockmodel import MOCK_MODEL, MockCompletion
from sse_server.server import Server
from tests.ai.helpers import (
    MESSAGES,
    PROMPT,
    Answer,
    RawStream,
    Serve,
    chunk_event,
    fake_upstream,
    sdk,
    service,
    sse_events,
    sse_head,
)
from tests.waiting import eventually


class Recorder:
    """A listener that keeps what it is told, with the loop time of each call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fail_on: str | None = None) -> None:
        self.loop = loop
        self.calls: list[tuple[str, Any, float]] = []
        self.fail_on = fail_on

    def token(self, text: str, raw: str | None) -> None:
        if text == self.fail_on:
            raise RuntimeError("listener failed on purpose")
        self.calls.append(("token", text, self.loop.time()))

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None:
        self.calls.append(("finish", reason, self.loop.time()))

    def fail(self, error: dict[str, Any]) -> None:
        self.calls.append(("fail", error["type"], self.loop.time()))

    async def writable(self) -> None:
        return None


def completion(*tokens: str) -> MockCompletion:
    return MockCompletion(list(tokens), "stop", {"prompt_tokens": 1, "completion_tokens": len(tokens),
                                                 "total_tokens": 1 + len(tokens)})


# -- the Pacer ---------------------------------------------------------------------------------


async def test_mock_run_paces_tokens_then_finishes() -> None:
    """Tokens arrive in order, never before first_token_s + i * interval_s, then finish once."""
    loop = asyncio.get_running_loop()
    pacer, stats, listener = Pacer(loop), Stats(), Recorder(loop)
    start = loop.time()
    run = MockRun(pacer, listener, completion("a", "b", "c"), 0.03, 0.02, stats)
    await asyncio.wait_for(run.done, 3)
    assert [(kind, value) for kind, value, _ in listener.calls] == [
        ("token", "a"), ("token", "b"), ("token", "c"), ("finish", "stop")]
    times = [t - start for _, _, t in listener.calls[:3]]
    assert all(t >= 0.03 + i * 0.02 - pacer.quantum_s for i, t in enumerate(times)), times
    assert (stats.started, stats.finished, stats.cancelled) == (1, 1, 0)
    pacer.close()


async def test_many_runs_share_one_pacer() -> None:
    """Runs started together on one Pacer each get every token, in order."""
    loop = asyncio.get_running_loop()
    pacer, stats = Pacer(loop), Stats()
    listeners = [Recorder(loop) for _ in range(50)]
    runs = [MockRun(pacer, listener, completion("x", "y"), 0.001 * (i % 5), 0.001, stats)
            for i, listener in enumerate(listeners)]
    await asyncio.wait_for(asyncio.gather(*(r.done for r in runs)), 3)
    assert all([v for _, v, _ in listener.calls] == ["x", "y", "stop"] for listener in listeners)
    assert stats.finished == 50
    pacer.close()


async def test_cancelled_run_says_nothing_more() -> None:
    """A cancelled run emits no further token and no finish; it counts as cancelled."""
    loop = asyncio.get_running_loop()
    pacer, stats, listener = Pacer(loop), Stats(), Recorder(loop)
    run = MockRun(pacer, listener, completion("a", "b", "c"), 0.0, 0.05, stats)
    await eventually(lambda: len(listener.calls) == 1, what="the first token")
    run.cancel()
    assert run.done.done()
    other = MockRun(pacer, Recorder(loop), completion("z"), 0.12, 0.0, stats)  # a later timer to wait on
    await asyncio.wait_for(other.done, 3)
    assert [v for _, v, _ in listener.calls] == ["a"]
    assert (stats.cancelled, stats.finished) == (1, 1)
    pacer.close()


async def test_a_failing_listener_ends_only_its_run() -> None:
    """A listener that raises ends its run with fail(server_error); other runs keep their timer."""
    loop = asyncio.get_running_loop()
    pacer, stats = Pacer(loop), Stats()
    bad, good = Recorder(loop, fail_on="b"), Recorder(loop)
    runs = [MockRun(pacer, bad, completion("a", "b", "c"), 0.0, 0.01, stats),
            MockRun(pacer, good, completion("a", "b", "c"), 0.0, 0.01, stats)]
    await asyncio.wait_for(asyncio.gather(*(r.done for r in runs)), 3)
    assert [(k, v) for k, v, _ in bad.calls] == [("token", "a"), ("fail", "server_error")]
    assert [v for _, v, _ in good.calls] == ["a", "b", "c", "stop"]
    assert (stats.failed, stats.finished) == (1, 1)
    pacer.close()


# -- streams over HTTP -------------------------------------------------------------------------


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


# -- the relay ---------------------------------------------------------------------------------


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


async def answer_garbage_event(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    event = b"data: {not json\n\n"
    writer.write(sse_head() + chunk_event("Hello") + b"%x\r\n%b\r\n" % (len(event), event))
    await writer.drain()
    await reader.read()


async def answer_error_event(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    event = b'data: {"error": {"message": "overloaded", "code": "overloaded"}}\n\n'
    writer.write(sse_head() + chunk_event("Hi") + b"%x\r\n%b\r\n" % (len(event), event))
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
    serve: Serve, answer: Answer, status: int, code: str, partial: str,
) -> None:
    """An upstream 500, cut stream, or silence ends each API variant with a clean error, never a hang."""
    async with fake_upstream(answer) as url:
        relay = await serve(upstream_url=url, upstream_first_byte_timeout_s=0.3, upstream_idle_timeout_s=0.3)
        await check_failure(relay, status, code, partial)


@pytest.mark.parametrize(
    ("answer", "code", "partial"),
    [(answer_garbage_event, "upstream_bad_response", "Hello"), (answer_error_event, "overloaded", "Hi")],
)
async def test_bad_upstream_events_end_the_stream_with_an_error(
    serve: Serve, answer: Answer, code: str, partial: str,
) -> None:
    """An upstream event that is not JSON, or an error event mid-stream, ends our stream with an error event."""
    async with fake_upstream(answer) as url:
        relay = await serve(upstream_url=url)
        async with (
            httpx.AsyncClient(base_url=relay.url, timeout=5) as http,
            aconnect_sse(http, "GET", "/chat/stream", params={"prompt": PROMPT, "model": "m"}) as source,
        ):
            events = await sse_events(source)
    assert events[-1].event == "error" and json.loads(events[-1].data)["code"] == code
    assert "".join(json.loads(e.data)["content"] for e in events[:-1]) == partial
    assert service(relay).stats.failed == 1


async def test_unreachable_upstream(serve: Serve) -> None:
    """A relay whose upstream refuses connections answers 502 upstream_unreachable."""
    async with fake_upstream(answer_never) as url:
        pass  # the port is closed again
    relay = await serve(upstream_url=url)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"


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
