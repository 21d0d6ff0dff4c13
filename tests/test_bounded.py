"""What one hostile client can make the server do, bounded: the protocol rows of the attack
table, each over real sockets, each followed by a prompt /healthz for somebody else."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from sse_server import Request
from sse_server.app import AnyResponse, Handler
from sse_server.demo import create_app

from .conftest import StartServer
from .http_client import exchange
from .waiting import eventually

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


async def healthz_within(port: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        assert (await exchange("127.0.0.1", port, HEALTHZ)).status == 200


async def stalled_reader(port: int, target: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a tiny receive buffer that sends one request and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    return reader, writer


async def test_readers_that_stop_reading_are_dropped_after_the_write_timeout(start_server: StartServer) -> None:
    """Task-driven streams whose readers take nothing are dropped after --write-timeout, like
    channel subscribers over budget, and stop costing descriptors and buffers."""
    server = await start_server(create_app, write_timeout_s=0.5)
    stalled = [await stalled_reader(server.port, b"/firehose?n=10000000&size=1024") for _ in range(5)]
    await eventually(lambda: len(server.streams) == 5)
    await eventually(lambda: not server.connections, timeout_s=5, what="stalled readers dropped")
    await healthz_within(server.port, 1)
    for _, writer in stalled:
        writer.close()


def reset(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_client_that_resets_mid_stream_ends_its_producer_at_once(start_server: StartServer,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A firehose whose client resets stops within a loop turn or two: no spinning on the dead
    transport, no flood of send warnings, and other clients are served promptly."""
    caplog.set_level(logging.WARNING)
    server = await start_server(create_app)
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /firehose?n=10000000&size=64 HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(50):  # reading as fast as it comes, so the server is never held back
            await reader.read(65536)
        reset(writer)  # gone between two of the server's writes, its socket never full
        await healthz_within(server.port, 1)
    await eventually(lambda: not server.streams, timeout_s=2, what="producers stopped")
    warnings = [r for r in caplog.records if "socket.send() raised exception" in r.getMessage()]
    assert len(warnings) <= 5  # at most the transport's one warning per reset, not thousands


async def test_a_pipelining_burst_takes_turns_with_other_clients(start_server: StartServer) -> None:
    """20,000 pipelined requests on one connection are served a few at a time between other
    clients' requests: somebody else is answered after a handful of them, not after thousands."""
    served: list[str] = []

    async def record(request: Request, call_next: Handler) -> AnyResponse:
        served.append(request.query_string)
        return await call_next(request)

    def app_with_record(config):  # type: ignore[no-untyped-def]
        app = create_app(config)
        app.add_middleware(record)
        return app

    server = await start_server(app_with_record)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz?burst HTTP/1.1\r\nHost: t\r\n\r\n" * 20_000)
    await eventually(lambda: len(served) >= 50)
    before = len(served)
    async with asyncio.timeout(5):
        reply = await exchange("127.0.0.1", server.port, b"GET /healthz?other HTTP/1.1\r\nHost: t\r\n"
                                                         b"Connection: close\r\n\r\n")
    assert reply.status == 200
    burst_before_other = served.index("other") - before
    assert burst_before_other < 200, burst_before_other
    writer.close()


async def test_shutdown_during_a_streamed_page_cuts_it_visibly(start_server: StartServer) -> None:
    """A page cut by shutdown ends without the last chunk, so the browser knows it is incomplete."""
    server = await start_server(create_app, shutdown_timeout_s=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /suspense?delays=0,60000 HTTP/1.1\r\nHost: t\r\nUser-Agent: Mozilla/5.0 Chrome/130\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    await reader.readuntil(b"section-0")  # the shell and the first section have arrived
    async with asyncio.timeout(5):
        await server.shutdown()
        rest = await reader.read(-1)
    assert not rest.endswith(b"0\r\n\r\n") and b"section-1" not in rest
    writer.close()
