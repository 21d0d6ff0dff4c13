"""The access log: one line per request, written when the response has ended."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from sse_server.demo import create_app

from ..conftest import StartServer
from ..http_client import exchange
from ..logs import access_lines, capture
from ..sse_client import SSEClient
from ..waiting import eventually


async def test_a_stream_is_logged_when_it_ends_with_its_bytes(start_server: StartServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A subscription's line comes when the client leaves, with the bytes the stream sent."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True, retry_ms=-1)
    capture(server)
    client = await SSEClient.connect(server.port, "/channels/log/events")
    await eventually(lambda: server.app.state["engine"].subscriber_count("log") == 1)
    await server.app.state["engine"].publish("log", "x" * 100)
    await client.take(1)
    assert not any("/channels/log/events" in line for line in access_lines(server))
    await client.close()
    await eventually(lambda: any("/channels/log/events" in line for line in access_lines(server)))
    (line,) = [line for line in access_lines(server) if "/channels/log/events" in line]
    assert '"GET /channels/log/events HTTP/1.1" 200 ' in line
    sent = int(line.split(" 200 ")[1].split("B")[0])
    assert sent > 100  # the event, framed


async def test_no_response_is_logged_with_a_dash(start_server: StartServer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A request the client abandons before any answer is logged with status '-'; a 404 with 404."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True)
    capture(server)
    reply = await exchange("127.0.0.1", server.port, b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert reply.status == 404
    await eventually(lambda: any('"GET /nope HTTP/1.1" 404' in line for line in access_lines(server)))
    raw = b"POST /channels/x/events HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    writer.close()  # leaves mid-body
    await eventually(lambda: any('"POST /channels/x/events HTTP/1.1" - ' in line for line in access_lines(server)))


async def test_json_lines_per_request_and_per_ended_stream(start_server: StartServer,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """--access-log-format json: one object per request, and one per ended stream with its events."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True, access_log_format="json", retry_ms=-1)
    capture(server)
    await exchange("127.0.0.1", server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    client = await SSEClient.connect(server.port, "/channels/j/events")
    engine = server.app.state["engine"]
    await eventually(lambda: engine.subscriber_count("j") == 1)
    for text in ("a", "b"):
        await engine.publish("j", text)
    await client.take(2)
    await client.close()
    await eventually(lambda: len(access_lines(server)) == 2)
    health, stream = (json.loads(line) for line in access_lines(server))
    assert health["method"] == "GET" and health["path"] == "/healthz" and health["status"] == 200
    assert health["bytes"] == 3 and health["client"] == "127.0.0.1" and health["http"] == "1.1"
    assert health["time"].endswith("Z") and health["duration_ms"] >= 0 and "stream" not in health
    assert stream["path"] == "/channels/j/events" and stream["stream"] is True
    assert stream["events"] == 2 and stream["completed"] is False and stream["bytes"] > 0


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_secrets_in_the_query_are_redacted(start_server: StartServer, caplog: pytest.LogCaptureFixture,
                                                 fmt: str) -> None:
    """A token in the query string never reaches the log, in either format; other parameters stay."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True, access_log_format=fmt)
    capture(server)
    path = "/healthz?channel=news&access_token=eyJhbGci.secret&api_key=k-123"
    await exchange("127.0.0.1", server.port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    (line,) = access_lines(server)
    assert "eyJhbGci" not in line and "k-123" not in line
    assert "/healthz?channel=news&access_token=REDACTED&api_key=REDACTED" in line


async def test_lines_are_written_in_batches_and_at_shutdown(start_server: StartServer,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Requests append to a batch, not to the stream; what is pending at shutdown is written
    before the server stops."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True)
    written = capture(server)
    assert server.access_log is not None
    server.access_log.flush_after_s = 60.0  # only shutdown writes, in this test
    for path in ("/healthz", "/healthz", "/nope"):
        raw = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        await exchange("127.0.0.1", server.port, raw)
    assert written.getvalue() == ""  # nothing written per request
    await server.shutdown()
    assert written.getvalue().count("\n") == 3 and '"GET /nope HTTP/1.1" 404' in written.getvalue()


async def test_a_batch_is_written_by_its_timer(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    """With no more requests coming, a pending line is written within the flush interval."""
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, access_log=True)
    written = capture(server)
    await exchange("127.0.0.1", server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    await eventually(lambda: written.getvalue().count("\n") == 1, what="the timer wrote the line")
