"""The per-request Exchange: framing once per broadcast, close-delimited HTTP/1.0, the end of
detached streams, and what it counts. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

from sse_server import App, Request
from sse_server.channels import MemoryEngine
from sse_server.sse.streams import ChannelStream

from .conftest import StartServer
from .http_client import read_reply
from .sse_client import SSEClient
from .waiting import eventually


def channel_app(engine: MemoryEngine) -> App:
    app = App()

    async def news(request: Request) -> ChannelStream:
        return await ChannelStream.subscribe(request, engine, ["news"], retry_ms=-1, heartbeat_s=0)

    app.add_route("/news", news)
    return app


async def test_a_broadcast_is_framed_once_for_every_chunked_subscriber(start_server: StartServer) -> None:
    """The first chunked subscriber frames the event and caches the frame on it for all the others."""
    engine = MemoryEngine()
    server = await start_server(channel_app(engine))
    clients = [await SSEClient.connect(server.port, "/news") for _ in range(3)]
    await eventually(lambda: engine.subscriber_count("news") == 3)
    await engine.publish("news", "hello")
    (event,) = engine.history_after("news", 0).events
    assert event.framed == b"%x\r\n%b\r\n" % (len(event.raw), event.raw)
    for client in clients:
        assert [e.data for e in await client.take(1)] == ["hello"]
        await client.close()


async def test_http10_subscriber_gets_the_raw_event_bytes(start_server: StartServer) -> None:
    """An HTTP/1.0 subscriber gets close-delimited events, unframed, from the same encoded event."""
    engine = MemoryEngine()
    server = await start_server(channel_app(engine))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /news HTTP/1.0\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    await eventually(lambda: engine.subscriber_count("news") == 1)
    published = await engine.publish("news", "plain")
    expected = f"id: {published.id}\ndata: plain\n\n".encode()
    assert await reader.readexactly(len(expected)) == expected
    assert engine.history_after("news", 0).events[0].framed is None  # nobody needed a chunk
    writer.close()


async def test_a_finished_channel_stream_returns_the_connection_to_keep_alive(start_server: StartServer) -> None:
    """When a channel ends, its stream gets its last chunk and the same connection serves the next request."""
    engine = MemoryEngine()
    app = channel_app(engine)
    server = await start_server(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /news HTTP/1.1\r\nHost: t\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await eventually(lambda: engine.subscriber_count("news") == 1)
    await engine.publish("news", "last")
    assert engine.close_channel("news") == 1
    size = await reader.readuntil(b"\r\n")
    await reader.readexactly(int(size, 16) + 2)
    assert await reader.readexactly(5) == b"0\r\n\r\n"
    assert not server.streams
    writer.write(b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    reply = await read_reply(reader)
    assert reply.status == 404  # served on the connection the stream used
    writer.close()


async def test_a_subscriber_that_leaves_is_unsubscribed_and_untracked(start_server: StartServer) -> None:
    """A detached stream whose client resets is removed from the channel and the server's stream set."""
    engine = MemoryEngine()
    server = await start_server(channel_app(engine))
    client = await SSEClient.connect(server.port, "/news")
    await eventually(lambda: engine.subscriber_count("news") == 1 and len(server.streams) == 1)
    client.writer.transport.abort()
    await eventually(lambda: engine.subscriber_count("news") == 0 and not server.streams and not server.connections)
