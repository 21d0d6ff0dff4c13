"""gzip negotiated from Accept-Encoding: whole plain bodies over a threshold, streams flushed per write."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from sse_server import App, PlainTextResponse, Request
from sse_server.demo import create_app
from sse_server.middleware.compression import accepts_gzip
from sse_server.sse import Event, parse_events
from sse_server.sse.streams import EventStream

from ..conftest import StartServer
from ..http_client import exchange, read_head
from ..waiting import eventually

GZIP = "Accept-Encoding: gzip, deflate\r\n"


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n".encode()


@pytest.mark.parametrize(("header", "expected"), [
    (None, False),
    ("", False),
    ("gzip", True),
    ("GZip;q=0.5", True),
    ("deflate, br", False),
    ("gzip;q=0", False),
    ("gzip;q=0.000, *", False),  # gzip named explicitly decides
    ("*", True),
    ("*;q=0", False),
    ("br, x-gzip", True),
    ("gzip;q=nonsense", False),
])
def test_accept_encoding_negotiation(header: str | None, expected: bool) -> None:
    """gzip is used when Accept-Encoding allows it, by name or by *, and never when q=0."""
    assert accepts_gzip(header) is expected


async def test_large_plain_responses_are_gzipped_small_ones_not(start_server: StartServer) -> None:
    """A page over the threshold is gzipped for a client that accepts it, identity otherwise, with
    Vary either way; /healthz is too small to touch."""
    server = await start_server(create_app)
    zipped = await exchange("127.0.0.1", server.port, get("/", GZIP))
    plain = await exchange("127.0.0.1", server.port, get("/"))
    assert zipped.header("content-encoding") == "gzip" and zipped.header("vary") == "Accept-Encoding"
    assert plain.header("content-encoding") is None and plain.header("vary") == "Accept-Encoding"
    assert zlib.decompress(zipped.body, 31) == plain.body
    assert len(zipped.body) < len(plain.body) * 0.6
    health = await exchange("127.0.0.1", server.port, get("/healthz", GZIP))
    assert health.body == b"ok\n" and health.header("vary") is None


async def test_compression_can_be_turned_off(start_server: StartServer) -> None:
    """--no-compression serves identity bodies whatever the client accepts."""
    server = await start_server(create_app, compression=False)
    reply = await exchange("127.0.0.1", server.port, get("/", GZIP))
    assert reply.header("content-encoding") is None and reply.body.startswith(b"<!doctype html>")


async def test_sse_is_not_compressed_unless_asked(start_server: StartServer) -> None:
    """Event streams stay identity by default, even for a client that accepts gzip."""
    server = await start_server(create_app)
    reply = await exchange("127.0.0.1", server.port, get("/firehose?n=3&size=8", GZIP))
    assert reply.header("content-encoding") is None and len(parse_events(reply.body)) == 3


async def test_compressed_sse_sends_each_event_and_heartbeat_at_once(start_server: StartServer) -> None:
    """With --compress-sse every channel event and heartbeat arrives as its own chunk that inflates
    to exactly that event on arrival: nothing is held back for the next one."""
    server = await start_server(create_app, compress_sse=True, heartbeat_s=0.1, retry_ms=1000)
    engine = server.app.state["engine"]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get("/channels/z/events", GZIP))
    reply = await read_head(reader)
    assert reply.header("content-encoding") == "gzip" and reply.header("vary") == "Accept-Encoding"
    inflate = zlib.decompressobj(31)

    async def next_chunk() -> bytes:
        size = int(await reader.readuntil(b"\r\n"), 16)
        chunk = await reader.readexactly(size + 2)
        return inflate.decompress(chunk[:-2])

    assert await asyncio.wait_for(next_chunk(), 5) == b"retry: 1000\n\n"  # the first bytes leave at once
    await eventually(lambda: engine.subscriber_count("z") == 1)
    for text in ("one", "two"):
        published = await engine.publish("z", text)
        body = await asyncio.wait_for(next_chunk(), 5)
        while body == b":\n\n":  # a heartbeat may come first; it too arrives whole
            body = await asyncio.wait_for(next_chunk(), 5)
        assert body == f"id: {published.id}\ndata: {text}\n\n".encode()
    assert await asyncio.wait_for(next_chunk(), 5) == b":\n\n"  # idle: a heartbeat, flushed at once
    writer.close()


async def test_one_stream_can_ask_for_compression(start_server: StartServer) -> None:
    """stream.compress = True gzips that stream without --compress-sse, and its end finishes the gzip member."""
    app = App()

    @app.route("/ticks")
    async def ticks(request: Request) -> EventStream:
        async def source():  # type: ignore[no-untyped-def]
            for n in range(3):
                yield Event(f"tick {n}")

        stream = EventStream(source(), retry_ms=-1)
        stream.compress = True
        return stream

    @app.route("/big")
    async def big(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * 5000)

    server = await start_server(app)
    reply = await exchange("127.0.0.1", server.port, get("/ticks", GZIP))
    assert reply.header("content-encoding") == "gzip"
    inflate = zlib.decompressobj(31)
    assert [e.data for e in parse_events(inflate.decompress(reply.body))] == ["tick 0", "tick 1", "tick 2"]
    assert inflate.eof  # the gzip trailer came before the last chunk
    big_reply = await exchange("127.0.0.1", server.port, get("/big", GZIP))
    assert zlib.decompress(big_reply.body, 31) == b"x" * 5000
