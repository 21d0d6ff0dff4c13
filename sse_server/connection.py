"""One client connection's life: keep-alive loop, deadlines, dispatch, writes.

This is the only module that holds a StreamReader/StreamWriter. The loop is:
read bytes into the pure parser (http11.py) until a head is complete, build a
Request, run the handler, write the response, repeat while keep-alive holds.

Timers are not per connection: a connection only records ``deadline`` and the
server's single sweeper closes whoever is past it (408 if a head was started).

While a streaming response runs, the connection task keeps reading the socket so
that a client who leaves is noticed at once (EOF), and the producer task is
cancelled then. The Connection itself is the ``Sink`` a stream writes into, so an
idle subscriber costs two tasks and this object, nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from typing import TYPE_CHECKING

from .app import HTTPError, Headers, Request, Response, StreamingResponse
from .http11 import (
    END_OF_MESSAGE,
    NEED_DATA,
    REASONS,
    ProtocolError,
    RequestHead,
    RequestParser,
    encode_chunk,
    encode_response_head,
    http_date,
)
from .routing import MethodNotAllowed, NotFound

if TYPE_CHECKING:
    from .config import Config
    from .server import Server

__all__ = ["Connection"]

log = logging.getLogger("sse_server")
access_log = logging.getLogger("sse_server.access")

_READ_SIZE = 64 * 1024
_MAX_DISCARD_BYTES = 64 * 1024  # unread request body we will skip to keep a connection; more -> close
_TCP_KEEPALIVE = (  # half-open peers of long streams die in about 2 minutes
    (getattr(socket, "TCP_KEEPIDLE", None), 60),
    (getattr(socket, "TCP_KEEPINTVL", None), 10),
    (getattr(socket, "TCP_KEEPCNT", None), 6),
)


class _ClientGone(Exception):
    """The peer closed or reset the connection; nothing more to send."""


def _plain_error(status: int, detail: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    body = f"{status} {REASONS.get(status, '')}: {detail}\n".encode("utf-8", "replace")
    headers = [
        ("Date", http_date().decode()),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    headers.extend(extra or ())
    return encode_response_head(status, headers) + body


def configure_socket(sock: socket.socket | None) -> None:
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in _TCP_KEEPALIVE:
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except OSError:  # the peer may already be gone; the first read will say so
        pass


class Connection:
    __slots__ = (
        "server", "reader", "writer", "transport", "parser", "client", "deadline",
        "chunked", "streaming", "response", "task", "_watching", "_head", "_keep_alive",
        "_body_state", "_closing",
    )

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        cfg = server.config
        self.parser = RequestParser(
            cfg.max_request_line_bytes, cfg.max_header_bytes, cfg.max_header_count, cfg.max_body_bytes
        )
        peer = writer.get_extra_info("peername")
        self.client: tuple[str, int] | None = tuple(peer[:2]) if isinstance(peer, tuple) else None  # type: ignore[assignment]
        self.deadline = 0.0  # loop time after which the sweeper closes us; 0 = no deadline
        self.chunked = True
        self.streaming = False
        self.response: StreamingResponse | None = None
        self.task: asyncio.Task[None] | None = None
        self._watching = False
        self._head: RequestHead | None = None
        self._keep_alive = True
        self._body_state = 0  # 0 none pending, 1 unread, 2 read or discarded
        self._closing = False

    # -- the keep-alive loop ------------------------------------------------

    async def run(self) -> None:
        self.task = asyncio.current_task()
        try:
            while not self._closing:
                head = await self._next_head()
                if head is None:
                    break
                await self._serve(head)
                if not self._keep_alive:
                    break
        except ProtocolError as e:
            self._write_and_close(_plain_error(e.status, str(e)))
            log.debug("protocol error from %s: %s", self.client, e)
        except (_ClientGone, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # server shutdown
        finally:
            self.server.untrack(self)
            self.deadline = 0.0
            if not self.transport.is_closing():
                self.transport.close()

    async def _next_head(self) -> RequestHead | None:
        parser = self.parser
        loop_time = self.server.loop.time
        self.server.await_request(self)
        self.deadline = loop_time() + self.server.config.keepalive_timeout_s
        started = False
        try:
            while True:
                event = parser.next_event()
                if event is not NEED_DATA:
                    assert isinstance(event, RequestHead)
                    return event
                if not started and parser.buffered:
                    started = True  # first byte of a head: the whole head has head_timeout_s
                    self.deadline = loop_time() + self.server.config.head_timeout_s
                if self._closing:
                    return None
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    if not parser.idle:
                        log.debug("client %s closed mid-head", self.client)
                    return None
                parser.feed(data)
        finally:
            self.server.request_received(self)
            self.deadline = 0.0

    def on_deadline(self) -> None:
        """Called by the server's sweeper once ``deadline`` has passed."""
        self.deadline = 0.0
        if self.parser.idle or not self.parser.in_head:
            self._closing = True
            self.transport.close()
        else:
            log.debug("request head from %s not complete in time", self.client)
            self._write_and_close(_plain_error(408, "request head not received in time"))

    def close_idle(self) -> bool:
        """Close now if waiting for a new request with nothing buffered (shutdown)."""
        if self.streaming or not self.parser.idle or self.task is None:
            return False
        self._closing = True
        self.transport.close()
        return True

    def _write_and_close(self, data: bytes) -> None:
        self._closing = True
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    # -- one request ----------------------------------------------------------

    async def _serve(self, head: RequestHead) -> None:
        self._head = head
        self._keep_alive = head.keep_alive
        self._body_state = 1 if head.has_body else 0
        request = Request(
            head.method, head.target, head.path, head.query, head.version,
            Headers(head.headers), self.client, self._read_body, self.server.app,
        )
        started = time.perf_counter()
        response = await self._dispatch(request)
        if isinstance(response, StreamingResponse):
            await self._send_stream(request, response)
        else:
            self._send_plain(request, response)
            await self.writer.drain()
        if self._body_state == 1:
            await self._discard_body()
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s - "%s %s HTTP/%s" %d %.1fms', self.client[0] if self.client else "-",
                head.method, head.target, head.version, response.status,
                (time.perf_counter() - started) * 1000,
            )

    async def _dispatch(self, request: Request) -> Response | StreamingResponse:
        try:
            match = self.server.app.router.match(request.method, request.path)
        except NotFound:
            return Response(f"no route for {request.path}\n", 404)
        except MethodNotAllowed as e:
            return Response(
                f"{request.method} not allowed here\n", 405, [("Allow", ", ".join(e.allow))]
            )
        request.path_params = match.params
        try:
            return await match.handler(request)
        except HTTPError as e:
            return Response(f"{e.detail or REASONS.get(e.status, '')}\n", e.status, e.headers)
        except (ProtocolError, _ClientGone, ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            self._keep_alive = False
            return Response("internal server error\n", 500)

    def _common_headers(self, response: Response | StreamingResponse) -> list[tuple[str, str]]:
        headers = response.headers.copy()
        headers.append(("Date", http_date().decode()))
        headers.append(("Server", self.server.config.server_header))
        if self.server.shutting_down:
            self._keep_alive = False
        if not self._keep_alive:
            headers.append(("Connection", "close"))
        elif self._head is not None and self._head.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        return headers

    def _send_plain(self, request: Request, response: Response) -> None:
        if self._body_state == 1 and self._unread_body_too_big():
            self._keep_alive = False  # we will not read a large body nobody asked for
        headers = self._common_headers(response)
        status = response.status
        if status >= 200 and status not in (204, 304):
            headers.append(("Content-Length", str(len(response.body))))
        head = encode_response_head(status, headers)
        if request.method == "HEAD" or status in (204, 304):
            self.transport.write(head)
        else:
            self.transport.write(head + response.body)

    def _unread_body_too_big(self) -> bool:
        head = self._head
        return head is not None and (head.chunked or (head.content_length or 0) > _MAX_DISCARD_BYTES)

    # -- request bodies -------------------------------------------------------

    async def _read_body(self) -> bytes:
        if self._body_state != 1:
            return b""
        head = self._head
        assert head is not None
        if head.expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        parts: list[bytes] = []
        self.deadline = self.server.loop.time() + self.server.config.body_timeout_s
        self.server.await_request(self)
        try:
            while True:
                event = self.parser.next_event()
                if event is END_OF_MESSAGE:
                    break
                if event is NEED_DATA:
                    data = await self.reader.read(_READ_SIZE)
                    if not data:
                        raise _ClientGone("closed mid-body")
                    self.parser.feed(data)
                else:
                    parts.append(event)  # type: ignore[arg-type]
        finally:
            self.server.request_received(self)
            self.deadline = 0.0
        self._body_state = 2
        return b"".join(parts)

    async def _discard_body(self) -> None:
        if not self._keep_alive:
            self._body_state = 2
            return
        head = self._head
        assert head is not None
        if head.expect_continue:
            # The client waits for our word before sending; it has a response now.
            self._keep_alive = False
            self._body_state = 2
            return
        await self._read_body()

    # -- streaming responses ----------------------------------------------------

    async def _send_stream(self, request: Request, response: StreamingResponse) -> None:
        head = self._head
        assert head is not None
        if self._body_state == 1 and self._unread_body_too_big():
            self._keep_alive = False
        headers = self._common_headers(response)
        if head.version == "1.0":
            # HTTP/1.0 has no chunked coding: the body ends when we close.
            self.chunked = False
            self._keep_alive = False
            headers = [h for h in headers if h[0] != "Connection"] + [("Connection", "close")]
        else:
            headers.append(("Transfer-Encoding", "chunked"))
        self.transport.write(encode_response_head(response.status, headers))
        if request.method == "HEAD":
            return
        if self._body_state == 1:
            await self._read_body()  # a POST stream's body is read before the stream starts
        self.streaming = True
        self.response = response
        self.server.stream_started(self)
        producer = asyncio.get_running_loop().create_task(self._produce(response))
        producer.add_done_callback(self._producer_done)
        left = False
        try:
            left = await self._watch_for_eof(producer)
        finally:
            self.streaming = False
            self.response = None
            self.server.stream_ended(self)
            if not producer.done():
                producer.cancel()
                try:
                    await producer
                except BaseException:  # its outcome was logged in _produce
                    pass
        if left or self.transport.is_closing():
            raise _ClientGone()
        if self.chunked:
            self.transport.write(encode_chunk(b""))
            await self.writer.drain()

    async def _produce(self, response: StreamingResponse) -> None:
        try:
            await response.stream(self)
        except (ConnectionError, _ClientGone):
            log.debug("client %s left during a stream", self.client)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream producer failed; ending the stream")
            self._keep_alive = False

    def _producer_done(self, _task: asyncio.Task[None]) -> None:
        if self._watching and self.task is not None:
            # Wake the EOF watch below; StreamReader.read is safe to cancel.
            self.task.cancel()

    async def _watch_for_eof(self, producer: asyncio.Task[None]) -> bool:
        """Read until the peer closes (-> True) or the producer ends (-> False)."""
        task = self.task
        assert task is not None
        self._watching = True
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    return True
                self.parser.feed(data)  # pipelined behind a stream: served after it
                if self.parser.buffered > self.server.config.max_header_bytes:
                    log.debug("client %s pipelined too much behind a stream", self.client)
                    self._keep_alive = False
                    return True
        except asyncio.CancelledError:
            if not producer.done() or task.uncancel() > 0:
                raise  # cancelled from outside (shutdown), not by the producer finishing
            return False
        finally:
            self._watching = False

    # -- the Sink protocol (app.Sink) used by stream producers ------------------

    @property
    def config(self) -> Config:
        return self.server.config

    def frame(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    def write(self, data: bytes) -> None:
        if data:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)

    def write_framed(self, wire: bytes) -> None:
        self.transport.write(wire)

    def buffered_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all (a client over its budget)."""
        self._keep_alive = False
        self.transport.abort()

    async def drain(self) -> None:
        if self.transport.is_closing():
            raise _ClientGone()
        await self.writer.drain()

    def end_stream(self) -> None:
        """Finish the live stream from outside (shutdown): the producer is cancelled."""
        self._keep_alive = False
        if self._watching and self.task is not None:
            self._closing = True
            self.transport.close()
