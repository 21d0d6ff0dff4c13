"""Shared pieces of the ai tests: configs, clients, a raw socket stream, fake upstreams.

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
from openai import AsyncOpenAI

from sse_server import App, Config, Server
from sse_server.ai import ChatService
from sse_server.demo import create_app
from sse_server.sse import Event, EventStreamParser
from tests.conftest import FAST_CONFIG

# On top of conftest.FAST_CONFIG: fast pacing keeps a whole answer to a few milliseconds.
LLM_CONFIG: dict[str, Any] = {
    "access_log": False, "model_first_token_ms": 1, "model_tokens_per_s": 5000,
    "upstream_connect_timeout_s": 2, "upstream_first_byte_timeout_s": 2, "upstream_idle_timeout_s": 2,
}  # fmt: skip
PROMPT = "How do I keep <b>streaming</b> answers fast & safe?"
MESSAGES = [{"role": "user", "content": PROMPT}]

Serve = Callable[..., Awaitable[Server]]
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def llm_config(**overrides: Any) -> Config:
    """The Config a test server runs with: FAST_CONFIG, LLM_CONFIG, then ``overrides``."""
    return Config(**{**FAST_CONFIG, **LLM_CONFIG, **overrides})


def demo_app(config: Config) -> App:
    """The demo app whose model routes use ``config`` (the same one its server gets)."""
    return create_app(config)


def service(server: Server) -> ChatService:
    chat: ChatService = server.app.state["llm"]
    return chat


def sdk(server: Server) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0, timeout=10)


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
async def fake_upstream(answer: Answer, *, read_request: bool = True) -> AsyncIterator[str]:
    """A raw upstream on 127.0.0.1:0; yields its base URL. Per connection it reads one
    request head and body (unless ``read_request`` is False), then ``answer`` writes anything."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            if read_request:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the relay gave up on us: what some tests are about
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
