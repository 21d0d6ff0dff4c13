"""Hostile values for the demo app's routes over real sockets on 127.0.0.1: each gets
its 4xx (or the clean 2xx it deserves), a body that says what was wrong, no
traceback in the log, and a fresh /healthz still answers."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from sse_server import Server
from sse_server.demo import create_app

from .conftest import StartServer
from .http_cases import HARMLESS_ROUTES, HOSTILE_ROUTES, chat, get
from .http_client import Reply, close, read_body, read_head
from .test_server import connect, healthz_ok

# An unpaced mock: answers and job streams end at once.
UNPACED = {"model_tokens_per_s": 0, "model_first_token_ms": 0}
AI_PREFIXES = (b"/v1/", b"/chat/")


async def ask(server: Server, raw: bytes, fragment: bytes) -> tuple[Reply, bytes]:
    """Send ``raw`` on a new connection: the reply's head, and its body (a stream,
    which may never end, is read until ``fragment`` shows up or it closes)."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(raw)
            reply = await read_head(reader)
            if reply.header("content-length") is not None:
                return reply, (await read_body(reader, reply)).body
            data = b""
            while fragment not in data:
                piece = await reader.read(64 * 1024)
                if not piece:
                    break
                data += piece
            return reply, data
    finally:
        await close(writer)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("raw", "status", "fragment"), HOSTILE_ROUTES)
async def test_hostile_route_input_gets_a_4xx(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, raw: bytes, status: int, fragment: bytes
) -> None:
    """A hostile value gets its 4xx saying what was wrong (OpenAI's error shape on the ai routes), logs no error."""
    server = await start_server(create_app, **UNPACED)
    reply, body = await ask(server, raw, fragment)
    assert reply.status == status, body[:300]
    assert fragment in body, body[:300]
    if raw.split(b" ", 2)[1].startswith(AI_PREFIXES):
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert fragment.decode() in error["message"]
    else:
        assert reply.header("content-type") == "text/plain; charset=utf-8"
    assert errors_logged(caplog) == []
    await healthz_ok(server)


@pytest.mark.parametrize(("raw", "status", "fragment"), HARMLESS_ROUTES)
async def test_harmless_oddity_gets_a_clean_answer(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, raw: bytes, status: int, fragment: bytes
) -> None:
    """An odd but acceptable value (a huge Last-Event-ID, a lone surrogate in text nobody echoes) is served cleanly."""
    server = await start_server(create_app, **UNPACED)
    reply, body = await ask(server, raw, fragment)
    assert reply.status == status, body[:300]
    assert fragment in body, body[:300]
    assert errors_logged(caplog) == []
    await healthz_ok(server)


async def test_chat_stream_resume_with_a_5000_digit_last_event_id(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """GET /chat/streams/{id} with a 5,000-digit Last-Event-ID replays the generation to its end."""
    server = await start_server(create_app, **UNPACED)
    reply, body = await ask(server, chat(b"", b"/chat/streams", b"Prefer: respond-async"), b"}")
    assert reply.status == 202, body
    job_id = json.loads(body)["id"].encode()
    huge = b"Last-Event-ID: lq3k9a1b2-" + b"1" * 5_000
    reply, body = await ask(server, get(b"/chat/streams/" + job_id, b"Host: t", huge), b"event: done")
    assert reply.status == 200 and reply.header("content-type").startswith("text/event-stream")  # type: ignore[union-attr]
    assert b"event: done" in body
    assert errors_logged(caplog) == []
    await healthz_ok(server)
