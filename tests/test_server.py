"""The connection layer and Server over real sockets on 127.0.0.1: keep-alive, pipelining,
limits, hostile input, deadlines, the connection cap, streaming, and graceful shutdown."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import time

import pytest

from sse_server import Server

from .conftest import StartServer
from .http_cases import FUZZ_SEEDS, HOSTILE, MiB, get, mutate, req
from .http_client import close, exchange, read_head, read_reply
from .waiting import eventually


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new raw connection to the server (bounded, like every wait here)."""
    async with asyncio.timeout(5):
        return await asyncio.open_connection(server.host, server.port)


async def healthz_ok(server: Server) -> None:
    """A fresh connection gets 200 from /healthz."""
    async with asyncio.timeout(5):
        reply = await exchange(server.host, server.port, get())
    assert reply.status == 200 and reply.body == b"ok\n"


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes (a reset counts as closed)."""
    try:
        return await reader.read(-1)
    except ConnectionResetError:
        return b""


def reset(writer: asyncio.StreamWriter) -> None:
    """Vanish the way a killed client does: an RST, not an orderly FIN."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- plain requests ----------------------------------------------------------------------


async def test_get_has_date_server_and_content_length(server: Server) -> None:
    """A plain response carries Date, Server and Content-Length."""
    async with asyncio.timeout(5):
        reply = await exchange(server.host, server.port, get())
    assert reply.status == 200
    assert reply.header("content-length") == "3"
    assert reply.header("date").endswith(" GMT")  # type: ignore[union-attr]
    assert reply.header("server") == server.config.server_header
    assert reply.header("connection") is None


async def test_keep_alive_serves_several_requests_on_one_connection(server: Server) -> None:
    """Five requests, one after another, are served on the same connection."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            for i in range(5):
                writer.write(get(b"/items/%d" % i))
                reply = await read_reply(reader)
                assert reply.status == 200 and reply.body == b"GET %d\n" % i
            writer.write(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 4", body=b"ping"))
            assert (await read_reply(reader)).body == b"ping"
            writer.write(get(b"/healthz", b"Host: t", b"Connection: close"))
            last = await read_reply(reader)
            assert last.header("connection") == "close"
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    assert len(server.connections) <= 1


async def test_pipelined_requests_answered_in_order(server: Server) -> None:
    """Three requests in one write get three responses in request order."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(
                get(b"/items/1")
                + req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 5", body=b"two!!")
                + req(b"DELETE /items/3 HTTP/1.1", b"Host: t")
            )
            bodies = [(await read_reply(reader)).body for _ in range(3)]
    finally:
        await close(writer)
    assert bodies == [b"GET 1\n", b"two!!", b"DELETE 3\n"]


async def test_pipelined_chunked_bodies(server: Server) -> None:
    """Chunked request bodies with extensions and trailers, pipelined, each echo back whole."""
    body = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: yes\r\n\r\n"
    one = req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked", body=body)
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(one + one + get())
            replies = [await read_reply(reader) for _ in range(3)]
    finally:
        await close(writer)
    assert [r.body for r in replies] == [b"abcde", b"abcde", b"ok\n"]


async def test_http10_closes_unless_keep_alive(server: Server) -> None:
    """HTTP/1.0 closes after the response unless it asked for keep-alive, which is echoed."""
    async with asyncio.timeout(5):
        reader, writer = await connect(server)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        reply = await read_reply(reader)
        assert reply.status == 200 and reply.header("connection") == "close"
        assert await read_to_eof(reader) == b""
        await close(writer)

        reader, writer = await connect(server)
        writer.write(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = await read_reply(reader)
        assert reply.header("connection") == "keep-alive"
        writer.write(b"GET /items/2 HTTP/1.0\r\n\r\n")
        assert (await read_reply(reader)).body == b"GET 2\n"
        assert await read_to_eof(reader) == b""
        await close(writer)


async def test_head_has_content_length_but_no_body(server: Server) -> None:
    """HEAD gets the GET handler's headers with Content-Length and no body bytes."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"HEAD /healthz HTTP/1.1", b"Host: t") + get(b"/items/9"))
            head = await read_reply(reader, head_request=True)
            assert head.status == 200 and head.header("content-length") == "3"
            after = await read_reply(reader)  # would read "ok\n" here if HEAD leaked a body
            assert after.body == b"GET 9\n"
    finally:
        await close(writer)


async def test_head_of_a_stream_has_no_body(server: Server) -> None:
    """HEAD on a streaming route sends the head only and keeps the connection usable."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"HEAD /stream?n=3 HTTP/1.1", b"Host: t") + get())
            head = await read_reply(reader, head_request=True)
            assert head.status == 200 and head.header("transfer-encoding") == "chunked"
            assert (await read_reply(reader)).body == b"ok\n"
    finally:
        await close(writer)


async def test_404_and_405_with_allow(server: Server) -> None:
    """An unknown path is 404; a known path under another method is 405 listing Allow."""
    async with asyncio.timeout(5):
        missing = await exchange(server.host, server.port, get(b"/nope"))
        wrong = await exchange(server.host, server.port, req(b"PUT /healthz HTTP/1.1", b"Host: t"))
        items = await exchange(server.host, server.port, req(b"POST /items/1 HTTP/1.1", b"Host: t",
                                                              b"Content-Length: 0"))
    assert missing.status == 404
    assert wrong.status == 405 and wrong.header("allow") == "GET, HEAD"
    assert items.status == 405 and items.header("allow") == "DELETE, GET, HEAD"


async def test_options_asterisk_is_answered(server: Server) -> None:
    """OPTIONS * is parsed and answered (no route: 404), not refused as malformed."""
    async with asyncio.timeout(5):
        reply = await exchange(server.host, server.port, req(b"OPTIONS * HTTP/1.1", b"Host: t"))
    assert reply.status == 404


async def test_absolute_form_target_is_routed_by_path(server: Server) -> None:
    """An absolute-form target is routed by its path and query."""
    async with asyncio.timeout(5):
        reply = await exchange(server.host, server.port, get(b"http://example.com/items/abs?x=1"))
    assert reply.status == 200 and reply.body == b"GET abs\n"


async def test_handler_error_is_500_and_closes(server: Server) -> None:
    """A handler exception becomes a 500 without a traceback, and the connection closes."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(get(b"/boom"))
            reply = await read_reply(reader)
            assert reply.status == 500 and b"Traceback" not in reply.body
            assert reply.header("connection") == "close"
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    await healthz_ok(server)


async def test_tcp_nodelay_is_set(server: Server) -> None:
    """Accepted sockets have TCP_NODELAY so small event writes go out at once."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(get())
            await read_reply(reader)
        (conn,) = server.connections
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await close(writer)


# -- request bodies ----------------------------------------------------------------------


async def test_expect_100_continue_flow(server: Server) -> None:
    """With Expect: 100-continue the server says 100 only when the handler reads, then answers."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 5", b"Expect: 100-continue"))
            interim = await read_reply(reader)
            assert interim.status == 100
            writer.write(b"hello")
            final = await read_reply(reader)
            assert final.status == 200 and final.body == b"hello"
            writer.write(get())
            assert (await read_reply(reader)).status == 200
    finally:
        await close(writer)


async def test_expect_100_continue_without_reading_closes(server: Server) -> None:
    """A handler that ignores the body gets no 100 sent; the answer says Connection: close."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"POST /ignore HTTP/1.1", b"Host: t", b"Content-Length: 5", b"Expect: 100-continue"))
            reply = await read_reply(reader)
            assert reply.status == 200 and reply.body == b"ignored\n"
            assert reply.header("connection") == "close"
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)


async def test_unread_small_body_is_skipped_and_connection_kept(server: Server) -> None:
    """A small body the handler never read is discarded so the next request parses cleanly."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"POST /ignore HTTP/1.1", b"Host: t", b"Content-Length: 9", body=b"GET /x\r\n\r\n"[:9])
                         + get(b"/items/after"))
            assert (await read_reply(reader)).body == b"ignored\n"
            assert (await read_reply(reader)).body == b"GET after\n"
    finally:
        await close(writer)


async def test_body_over_limit_sent_in_full_gets_413(start_server: StartServer) -> None:
    """A 2 MiB body announced by Content-Length is refused with 413 before it is read."""
    server = await start_server()
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: %d" % (2 * MiB)))
            reply = await read_reply(reader)
            assert reply.status == 413 and reply.header("connection") == "close"
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    await healthz_ok(server)


async def test_body_over_limit_arriving_with_its_head_gets_413(server: Server) -> None:
    """A client that sends head and 2 MiB body in one go still reads the 413 before the close."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: %d" % (2 * MiB),
                             body=b"x" * (2 * MiB)))
            reply = await read_reply(reader)
            assert reply.status == 413
    finally:
        writer.transport.abort()
    await healthz_ok(server)


async def test_chunked_body_over_limit_gets_413(server: Server) -> None:
    """A chunked body that grows past the limit is refused with 413 while it is read."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked"))
            piece = b"10000\r\n" + b"z" * 0x10000 + b"\r\n"
            for _ in range(17):  # 17 x 64 KiB > 1 MiB
                writer.write(piece)
            reply = await read_reply(reader)
            assert reply.status == 413
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    await healthz_ok(server)


# -- hostile input over a real socket --------------------------------------------------


@pytest.mark.parametrize(("raw", "status"), HOSTILE)
async def test_hostile_request_over_socket(server: Server, raw: bytes, status: int) -> None:
    """A hostile request gets its expected status and a close, and a fresh /healthz still answers 200."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(raw)
            reply = await read_reply(reader)
            assert reply.status == status, reply.body
            assert reply.header("connection") == "close"
            assert reply.header("date") and reply.header("server") == server.config.server_header
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    await healthz_ok(server)


async def test_framing_error_is_not_followed_by_another_request(server: Server) -> None:
    """A request pipelined behind a framing error is never served."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 1", b"Content-Length: 2",
                             body=b"xx") + get(b"/items/smuggled"))
            data = await read_to_eof(reader)
    finally:
        await close(writer)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert data.count(b"HTTP/1.1") == 1 and b"smuggled" not in data


# -- deadlines ---------------------------------------------------------------------------


async def test_slow_head_gets_408_and_close(start_server: StartServer) -> None:
    """Half a request head that stops arriving gets 408 once head_timeout_s has passed."""
    server = await start_server(head_timeout_s=0.5)
    reader, writer = await connect(server)
    try:
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        async with asyncio.timeout(3):
            reply = await read_reply(reader)
            assert reply.status == 408 and reply.header("connection") == "close"
            assert await read_to_eof(reader) == b""
        assert 0.4 < time.monotonic() - started < 2.0
    finally:
        await close(writer)
    await healthz_ok(server)


async def test_head_deadline_is_for_the_whole_head(start_server: StartServer) -> None:
    """A head dripped a byte at a time gets 408 although each byte arrives well in time."""
    server = await start_server(head_timeout_s=0.5)
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(4):
            drip = asyncio.ensure_future(_drip(writer, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100, 0.05))
            reply = await read_reply(reader)
            drip.cancel()
            assert reply.status == 408
    finally:
        await close(writer)


async def _drip(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await asyncio.sleep(every_s)
    except ConnectionError:
        pass


async def test_keep_alive_idle_timeout_closes_quietly(start_server: StartServer) -> None:
    """An idle keep-alive connection is closed after keepalive_timeout_s with no bytes sent."""
    server = await start_server(keepalive_timeout_s=0.3)
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(3):
            writer.write(get())
            assert (await read_reply(reader)).status == 200
            started = time.monotonic()
            assert await read_to_eof(reader) == b""
        assert 0.2 < time.monotonic() - started < 2.0
    finally:
        await close(writer)
    await eventually(lambda: not server.connections)


async def test_idle_connection_never_used_closes_quietly(start_server: StartServer) -> None:
    """A connection that never sends a byte is closed at the keep-alive timeout without a 408."""
    server = await start_server(keepalive_timeout_s=0.3, head_timeout_s=5.0)
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(3):
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)


async def test_connection_cap_answers_503_with_retry_after(start_server: StartServer) -> None:
    """With max_connections=5 a sixth connection gets 503 with Retry-After; a freed slot is reused."""
    server = await start_server(max_connections=5)
    conns = [await connect(server) for _ in range(5)]
    try:
        async with asyncio.timeout(5):
            for reader, writer in conns:
                writer.write(get())
                assert (await read_reply(reader)).status == 200
            assert len(server.connections) == 5
            reader, writer = await connect(server)
            writer.write(get())
            reply = await read_reply(reader)
            assert reply.status == 503 and reply.header("retry-after") is not None
            assert int(reply.header("retry-after") or "x") > 0
            assert await read_to_eof(reader) == b""
            await close(writer)

            await close(conns.pop()[1])
            await eventually(lambda: len(server.connections) < 5)
            await healthz_ok(server)
    finally:
        for _, w in conns:
            await close(w)


# -- streaming ---------------------------------------------------------------------------


async def test_chunked_streaming_one_chunk_per_item(server: Server) -> None:
    """A StreamingResponse on HTTP/1.1 is chunked, one rightly sized chunk per item, and the connection is kept."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(get(b"/stream?n=4"))
            reply = await read_reply(reader)
            assert reply.header("transfer-encoding") == "chunked" and reply.header("content-length") is None
            assert reply.chunks == [b"part 0\n", b"part 1\n", b"part 2\n", b"part 3\n"]
            writer.write(get())
            assert (await read_reply(reader)).body == b"ok\n"
    finally:
        await close(writer)


async def test_request_pipelined_behind_a_stream_is_served_after_it(server: Server) -> None:
    """A request that arrives while a stream runs is answered once the stream ends."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(get(b"/stream?n=2") + get(b"/items/next"))
            assert (await read_reply(reader)).body == b"part 0\npart 1\n"
            assert (await read_reply(reader)).body == b"GET next\n"
    finally:
        await close(writer)


async def test_http10_stream_is_close_delimited(server: Server) -> None:
    """On HTTP/1.0 a stream has neither chunking nor Content-Length; the close ends it."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(b"GET /stream?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head = await read_head(reader)
            assert head.header("transfer-encoding") is None and head.header("content-length") is None
            assert head.header("connection") == "close"
            assert await read_to_eof(reader) == b"part 0\npart 1\npart 2\n"
    finally:
        await close(writer)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_client_leaving_mid_stream_cancels_the_producer(server: Server, how: str) -> None:
    """A client that closes or resets mid-stream gets its producer cancelled and its finally run."""
    state = server.app.state
    reader, writer = await connect(server)
    async with asyncio.timeout(5):
        writer.write(get(b"/forever"))
        head = await read_head(reader)
        assert head.status == 200
        await state["stream_started"].wait()
        assert server.streams
        if how == "reset":
            reset(writer)
        else:
            writer.transport.abort()  # nothing unread: the kernel sends a FIN
        await state["producer_cancelled"].wait()
        await state["producer_finally"].wait()
        await eventually(lambda: not server.connections and not server.streams)
    await healthz_ok(server)


async def test_client_reset_mid_handler_cancels_it(server: Server) -> None:
    """A client whose connection is reset while a plain handler runs gets that handler cancelled."""
    state = server.app.state
    reader, writer = await connect(server)
    async with asyncio.timeout(5):
        writer.write(get(b"/slow"))
        await state["slow_entered"].wait()
        reset(writer)
        await state["slow_cancelled"].wait()
        await eventually(lambda: not server.connections)
    await healthz_ok(server)


async def test_flood_pipelined_behind_a_stream_drops_the_client(server: Server) -> None:
    """More than a head's worth of bytes sent behind a running stream drops the connection."""
    state = server.app.state
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(get(b"/forever"))
            await read_head(reader)
            await state["stream_started"].wait()
            writer.write(b"X" * (server.config.max_header_bytes + 1024))
            await state["producer_cancelled"].wait()
            await read_to_eof(reader)
    finally:
        await close(writer)
    await healthz_ok(server)


async def test_half_closed_client_still_gets_its_response(server: Server) -> None:
    """A client that shuts its sending side after the request still reads the answer, then EOF."""
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(5):
            writer.write(get(b"/items/half") + get(b"/items/closed"))
            writer.write_eof()
            assert (await read_reply(reader)).body == b"GET half\n"
            assert (await read_reply(reader)).body == b"GET closed\n"
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)


# -- shutdown ----------------------------------------------------------------------------


async def test_graceful_shutdown(start_server: StartServer) -> None:
    """Shutdown lets an in-flight plain response finish, cuts an open stream visibly and returns in time."""
    server = await start_server(shutdown_timeout_s=3.0)
    state = server.app.state
    async with asyncio.timeout(10):
        slow_reader, slow_writer = await connect(server)
        slow_writer.write(get(b"/slow"))
        stream_reader, stream_writer = await connect(server)
        stream_writer.write(get(b"/forever"))
        idle_reader, idle_writer = await connect(server)
        idle_writer.write(get())
        assert (await read_reply(idle_reader)).status == 200
        await state["slow_entered"].wait()
        await state["stream_started"].wait()
        stream_head = await read_head(stream_reader)
        assert stream_head.status == 200 and stream_head.header("transfer-encoding") == "chunked"

        started = time.monotonic()
        shutdown = asyncio.ensure_future(server.shutdown())
        assert await read_to_eof(idle_reader) == b""  # idle keep-alive connection closed at once
        stream_rest = await read_to_eof(stream_reader)  # the stream ends
        await state["producer_cancelled"].wait()
        assert not shutdown.done()  # still waiting for /slow

        state["slow_release"].set()
        reply = await read_reply(slow_reader)
        assert reply.status == 200 and reply.body == b"slow done\n"
        assert reply.header("connection") == "close"
        await shutdown
        elapsed = time.monotonic() - started
        with pytest.raises(OSError):
            await asyncio.open_connection(server.host, server.port)
    assert elapsed < 3.0
    # Aborted, without the last chunk: a plain stream that was cut must not look complete.
    assert stream_rest == b"6\r\nfirst\n\r\n"
    assert state["producer_finally"].is_set()
    for w in (slow_writer, stream_writer, idle_writer):
        await close(w)


async def test_shutdown_is_bounded_when_a_handler_hangs(start_server: StartServer) -> None:
    """A handler that never returns does not hold shutdown beyond shutdown_timeout_s (plus grace)."""
    server = await start_server(shutdown_timeout_s=0.5)
    reader, writer = await connect(server)
    try:
        writer.write(get(b"/slow"))
        async with asyncio.timeout(5):
            await server.app.state["slow_entered"].wait()
            started = time.monotonic()
            await server.shutdown()
            assert time.monotonic() - started < 2.0
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)


async def test_shutdown_answers_a_connection_whose_first_request_is_on_its_way(start_server: StartServer) -> None:
    """A connection accepted just before shutdown gets its first request answered (a client retries only on
    a reused connection); one that stays silent is closed within about a second, not after the timeout."""
    server = await start_server(shutdown_timeout_s=10.0)
    async with asyncio.timeout(5):
        late_reader, late_writer = await connect(server)
        silent_reader, silent_writer = await connect(server)
        await eventually(lambda: len(server.connections) == 2, what="both connections accepted")
        started = time.monotonic()
        shutdown = asyncio.ensure_future(server.shutdown())
        await asyncio.sleep(0)  # shutdown has begun: the listener is closed
        late_writer.write(get())
        reply = await read_reply(late_reader)
        assert reply.status == 200 and reply.header("connection") == "close"
        assert await read_to_eof(silent_reader) == b""
        await shutdown
    assert time.monotonic() - started < 3.0
    for w in (late_writer, silent_writer):
        await close(w)


async def test_shutdown_twice_is_safe(server: Server) -> None:
    """Concurrent and repeated shutdown calls all return once the one shutdown is done."""
    async with asyncio.timeout(5):
        await asyncio.gather(server.shutdown(), server.shutdown())
        await server.shutdown()


# -- many slow clients -------------------------------------------------------------------


async def test_500_slow_drip_clients_do_not_delay_healthz(start_server: StartServer) -> None:
    """500 connections each dripping a byte every 100 ms leave /healthz answering in < 0.5 s."""
    server = await start_server(head_timeout_s=30.0)
    stop = asyncio.Event()
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000

    async def drip(writer: asyncio.StreamWriter) -> None:
        i = 0
        while not stop.is_set():
            writer.write(head[i : i + 1])
            i += 1
            try:
                async with asyncio.timeout(0.1):
                    await stop.wait()
            except TimeoutError:
                pass

    async with asyncio.timeout(30):
        conns = await asyncio.gather(*(connect(server) for _ in range(500)))
        drips = [asyncio.ensure_future(drip(w)) for _, w in conns]
        try:
            await eventually(lambda: len(server.connections) >= 500)
            worst = 0.0
            for _ in range(8):
                await asyncio.sleep(0.15)  # let a round of drips land between checks
                started = time.monotonic()
                await healthz_ok(server)
                worst = max(worst, time.monotonic() - started)
            assert worst < 0.5
            assert len(server.connections) >= 500
        finally:
            stop.set()
            await asyncio.gather(*drips)
            for _, w in conns:
                w.transport.abort()


async def test_body_that_stops_arriving_gets_408(start_server: StartServer) -> None:
    """A declared body that stops arriving gets 408 after body_timeout_s, and the handler is stopped."""
    server = await start_server(body_timeout_s=0.3)
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(3):
            writer.write(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 10", body=b"12345"))
            reply = await read_reply(reader)
            assert reply.status == 408 and reply.header("connection") == "close"
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    await healthz_ok(server)


async def test_unread_body_that_stops_arriving_is_not_answered_twice(start_server: StartServer) -> None:
    """If the rest of a body the handler ignored never comes, the connection closes with no second response."""
    server = await start_server(body_timeout_s=0.3)
    reader, writer = await connect(server)
    try:
        async with asyncio.timeout(3):
            writer.write(req(b"POST /ignore HTTP/1.1", b"Host: t", b"Content-Length: 10", body=b"12345"))
            reply = await read_reply(reader)
            assert reply.status == 200
            assert await read_to_eof(reader) == b""
    finally:
        await close(writer)


async def test_damaged_requests_never_get_a_500_or_hang(server: Server) -> None:
    """Randomly damaged requests over real sockets get answers below 500 (or 501/505) and end, never hang."""
    rng = random.Random(7230)
    async with asyncio.timeout(20):
        for _ in range(60):
            raw = mutate(rng, rng.choice(FUZZ_SEEDS))
            reader, writer = await connect(server)
            try:
                writer.write(raw)
                writer.write_eof()  # so an incomplete request ends instead of waiting for its deadline
                data = await read_to_eof(reader)
            finally:
                await close(writer)
            statuses = [int(s) for s in re.findall(rb"(?m)^HTTP/1\.1 (\d{3}) ", data)]
            assert all(s < 500 or s in (501, 505) for s in statuses), (raw, data[:300])
    await healthz_ok(server)


async def test_handler_that_catches_a_body_error_answers_once_and_closes(start_server) -> None:
    """A handler may catch the malformed-body error and respond; that is the only response, then close."""
    from sse_server import App, PlainTextResponse, Request
    from sse_server.http11 import ProtocolError

    app = App()

    @app.route("/lenient", methods=["POST"])
    async def lenient(request: Request) -> PlainTextResponse:
        try:
            await request.body()
        except ProtocolError:
            return PlainTextResponse("could not read your body\n", 422)
        return PlainTextResponse("ok\n")

    server = await start_server(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /lenient HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    async with asyncio.timeout(5):
        data = await reader.read()  # everything until the server closes
    writer.close()
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 422 ") and b"Connection: close" in data
