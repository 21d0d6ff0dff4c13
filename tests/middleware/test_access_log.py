"""The access log: one line per request, written when the response has ended."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sse_server.demo import create_app

from ..conftest import StartServer
from ..http_client import exchange
from ..sse_client import SSEClient
from ..waiting import eventually


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sse_server.access"]


async def test_a_stream_is_logged_when_it_ends_with_its_bytes(start_server: StartServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A subscription's line comes when the client leaves, with the bytes the stream sent."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True, retry_ms=-1)
    client = await SSEClient.connect(server.port, "/channels/log/events")
    await eventually(lambda: server.app.state["engine"].subscriber_count("log") == 1)
    await server.app.state["engine"].publish("log", "x" * 100)
    await client.take(1)
    assert not any("/channels/log/events" in line for line in access_lines(caplog))
    await client.close()
    await eventually(lambda: any("/channels/log/events" in line for line in access_lines(caplog)))
    (line,) = [line for line in access_lines(caplog) if "/channels/log/events" in line]
    assert '"GET /channels/log/events HTTP/1.1" 200 ' in line
    sent = int(line.split(" 200 ")[1].split("B")[0])
    assert sent > 100  # the event, framed


async def test_no_response_is_logged_with_a_dash(start_server: StartServer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A request the client abandons before any answer is logged with status '-'; a 404 with 404."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True)
    reply = await exchange("127.0.0.1", server.port, b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert reply.status == 404
    await eventually(lambda: any('"GET /nope HTTP/1.1" 404' in line for line in access_lines(caplog)))
    raw = b"POST /channels/x/events HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    writer.close()  # leaves mid-body
    await eventually(lambda: any('"POST /channels/x/events HTTP/1.1" - ' in line for line in access_lines(caplog)))
