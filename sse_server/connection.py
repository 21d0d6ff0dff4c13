"""One client connection: an asyncio Protocol driving the pure parser.

This is the only module that touches a transport. Bytes arrive in
``data_received`` and go into the parser (http11.py); once a request head is
complete a task runs the handler and writes the response, then keeps serving any
pipelined request already buffered. Between requests a connection has no task.

Why a Protocol and not ``asyncio.start_server``: a StreamReader, a StreamWriter
and a task parked per connection cost about 10 KiB for every idle subscriber,
and a wake-up per read. Here an idle keep-alive connection or a channel
subscriber is this object, its transport and its parser: a few KiB, no task.

Streams come in two shapes. An iterator-fed stream runs in the request task,
which is cancelled the moment the client leaves (EOF or reset). A push stream
(a broker channel) calls ``detach(on_close)`` and lets its task end; the broker
writes into the connection directly and ``on_close`` runs when the client leaves.

Timers are not per connection: a connection records ``deadline`` and the
server's single sweeper closes whoever is past it (408 if a head was started).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
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

__all__ = ["Connection", "ClientGone"]

log = logging.getLogger("sse_server")
access_log = logging.getLogger("sse_server.access")

_MAX_DISCARD_BYTES = 64 * 1024  # unread request body we skip to keep a connection; more -> close
_READ_HIGH_WATER = 256 * 1024  # buffered request bytes before we stop reading the socket
_LAST_CHUNK = encode_chunk(b"")
_TCP_KEEPALIVE = (  # half-open peers of long streams are found in about two minutes
    (getattr(socket, "TCP_KEEPIDLE", None), 60),
    (getattr(socket, "TCP_KEEPINTVL", None), 10),
    (getattr(socket, "TCP_KEEPCNT", None), 6),
)


class ClientGone(ConnectionError):
    """The peer closed or reset the connection; nothing more will reach it."""


def error_response_bytes(status: int, detail: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A complete minimal response that also closes the connection."""
    body = f"{status} {REASONS.get(status, '')}: {detail}\n".encode("utf-8", "replace")
    headers = [
        ("Date", http_date().decode()),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(extra or ()),
    ]
    return encode_response_head(status, headers) + body


def _set_send_buffer(sock: socket.socket | None, size: int) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError:  # gone already; the next write will say so
            pass


def _configure_socket(sock: socket.socket | None) -> None:
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in _TCP_KEEPALIVE:
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except OSError:  # the peer may already be gone; connection_lost will follow
        pass


class Connection(asyncio.Protocol):
    __slots__ = (
        "server", "transport", "parser", "client", "deadline", "task", "chunked",
        "response", "on_close", "_head", "_keep_alive", "_body_unread", "_waiter",
        "_drain_waiter", "_paused_writing", "_eof", "_lost", "_closing", "_head_started",
        "_answered",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        cfg = server.config
        self.parser = RequestParser(
            cfg.max_request_line_bytes, cfg.max_header_bytes, cfg.max_header_count, cfg.max_body_bytes
        )
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.deadline = 0.0  # loop time after which the sweeper acts; 0 = none
        self.task: asyncio.Task[None] | None = None  # the request being served, if any
        self.chunked = True
        self.response: StreamingResponse | None = None  # the live stream, if any
        self.on_close: Callable[[], None] | None = None  # set by detach()
        self._head: RequestHead | None = None
        self._keep_alive = True
        self._body_unread = False
        self._waiter: asyncio.Future[None] | None = None  # request task waiting for bytes
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._eof = False
        self._lost = False
        self._closing = False
        self._head_started = False
        self._answered = False  # the current request's response head has been written

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        server = self.server
        if server.shutting_down or len(server.connections) >= server.config.max_connections:
            retry = "1" if server.shutting_down else "5"
            self._closing = True
            self.transport.write(self._error_bytes(503, "server is at its connection limit", [("Retry-After", retry)]))
            self.transport.close()
            return
        _configure_socket(transport.get_extra_info("socket"))
        server.track(self)
        self._await_request()

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        if self.response is not None:
            # Bytes pipelined behind a stream wait for it to end; a client that
            # floods them is not playing by the rules.
            if parser.buffered > self.server.config.max_header_bytes:
                log.debug("client %s pipelined too much behind a stream", self.client)
                self.abort()
            return
        if self.task is None:
            self._start_next()
            return
        if parser.buffered > _READ_HIGH_WATER:
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        if self.response is not None or self.task is None:
            # A stream's client left, or an idle connection ended: close now. A
            # request in progress may still be answered over the half-closed socket.
            self._closing = True
            return False
        self._wake()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._closing = True
        self.server.untrack(self)
        self._wake()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientGone())
            waiter.exception()  # retrieved here so an unawaited drain logs nothing
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            self.response = None
            try:
                on_close()
            except Exception:
                log.exception("stream close hook failed")
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client left: stop the handler or producer

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- between requests ------------------------------------------------------------

    def _await_request(self) -> None:
        """Idle: no task; the next bytes start a request, the sweeper ends a silence."""
        self.deadline = self.server.loop.time() + self.server.config.keepalive_timeout_s
        self._head_started = False
        self.server.await_deadline(self)
        if self.parser.buffered:
            self._start_next()

    def _start_next(self) -> None:
        """Parse a head from what is buffered; if complete, serve it in a new task."""
        try:
            head = self.parser.next_event()
        except ProtocolError as e:
            log.debug("protocol error from %s: %s", self.client, e)
            self._fail(e)
            return
        if head is NEED_DATA:
            if self.parser.buffered and not self._head_started:
                # First byte of a head: the whole head now has head_timeout_s.
                self._head_started = True
                self.deadline = self.server.loop.time() + self.server.config.head_timeout_s
            return
        assert isinstance(head, RequestHead)
        self.server.clear_deadline(self)
        self.deadline = 0.0
        self.task = self.server.loop.create_task(self._serve(head))

    def on_deadline(self) -> None:
        """Called by the server's sweeper once ``deadline`` has passed."""
        self.deadline = 0.0
        if self.task is None and not self.parser.idle and self.parser.in_head:
            log.debug("request head from %s not complete in time", self.client)
            self._write_and_close(self._error_bytes(408, "request head not received in time"))
        elif self.task is not None:
            # A request body that stopped arriving. If it was only being skipped after
            # the response went out, a 408 would read as the answer to the next request.
            if self._answered:
                self._close()
            else:
                self._write_and_close(self._error_bytes(408, "request body not received in time"))
            self.task.cancel()
        else:
            self._close()

    def close_if_idle(self) -> bool:
        """Close now if between requests with nothing buffered (shutdown)."""
        if self.task is not None or self.response is not None or not self.parser.idle:
            return False
        self._close()
        return True

    def _close(self) -> None:
        self._closing = True
        self.transport.close()

    def _fail(self, error: ProtocolError) -> None:
        self._write_and_close(self._error_bytes(error.status, str(error)))

    def _error_bytes(self, status: int, detail: str, extra: list[tuple[str, str]] | None = None) -> bytes:
        return error_response_bytes(status, detail, [("Server", self.server.config.server_header), *(extra or ())])

    def _write_and_close(self, data: bytes) -> None:
        self._closing = True
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    # -- one request ------------------------------------------------------------------

    async def _serve(self, head: RequestHead) -> None:
        try:
            while True:
                await self._respond(head)
                if self.response is not None:
                    return  # detached stream: lives on without this task
                if not self._keep_alive or self._closing:
                    self._close()
                    return
                try:
                    event = self.parser.next_event()
                except ProtocolError as e:
                    self._fail(e)
                    return
                if event is NEED_DATA:
                    if self._eof:
                        self._close()  # the client half-closed after its last request
                        return
                    break
                assert isinstance(event, RequestHead)
                head = event  # pipelined: serve it in this same task
        except (ClientGone, ConnectionError):
            self._close()
            return
        except asyncio.CancelledError:
            self._close()
            if not (self._lost or self._eof or self.server.shutting_down):
                raise
            return
        finally:
            if self.task is asyncio.current_task():
                self.task = None
        self.transport.resume_reading()
        self._await_request()

    async def _respond(self, head: RequestHead) -> None:
        self._head = head
        self._keep_alive = head.keep_alive
        self._body_unread = head.has_body
        self._answered = False
        request = Request(
            head.method, head.target, head.path, head.query, head.version,
            Headers(head.headers), self.client, self._read_body, self.server.app,
        )
        started = time.perf_counter()
        response: Response | StreamingResponse | None = None
        try:
            try:
                response = await self._dispatch(request)
                if isinstance(response, StreamingResponse):
                    await self._send_stream(request, response)
                    # (its body, if any, was read before the head went out)
            except ProtocolError as e:  # a malformed body, met before any response byte
                self._fail(e)
                raise ClientGone() from None
            if not isinstance(response, StreamingResponse):
                self._send_plain(request, response)
                if self._paused_writing:
                    await self.drain()
                if self._body_unread and self._keep_alive:
                    try:
                        await self._read_body()  # skip what the handler left, to reach the next request
                    except ProtocolError:
                        raise ClientGone() from None
        finally:
            if self.server.config.access_log and access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    '%s - "%s %s HTTP/%s" %s %.1fms', self.client[0] if self.client else "-",
                    head.method, head.target, head.version,
                    response.status if response is not None else "-",
                    (time.perf_counter() - started) * 1000,
                )

    async def _dispatch(self, request: Request) -> Response | StreamingResponse:
        try:
            match = self.server.app.router.match(request.method, request.path)
        except NotFound:
            return Response(f"no route for {request.path}\n", 404)
        except MethodNotAllowed as e:
            return Response(f"{request.method} not allowed here\n", 405, [("Allow", ", ".join(e.allow))])
        request.path_params = match.params
        try:
            return await match.handler(request)
        except HTTPError as e:
            return Response(f"{e.detail or REASONS.get(e.status, '')}\n", e.status, e.headers)
        except (ProtocolError, ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            self._keep_alive = False
            return Response("internal server error\n", 500)

    def _response_headers(self, response: Response | StreamingResponse) -> list[tuple[str, str]]:
        head = self._head
        assert head is not None
        if self._body_unread and (
            head.chunked or head.expect_continue or (head.content_length or 0) > _MAX_DISCARD_BYTES
        ):
            # We will not read a large body nobody asked for, nor invite an unread one
            # with a 100 Continue that would follow the final response (RFC 9110 §10.1.1).
            self._keep_alive = False
        if self.server.shutting_down:
            self._keep_alive = False
        headers = response.headers.copy()
        headers.append(("Date", http_date().decode()))
        headers.append(("Server", self.server.config.server_header))
        if not self._keep_alive:
            headers.append(("Connection", "close"))
        elif head.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        return headers

    def _send_plain(self, request: Request, response: Response) -> None:
        headers = self._response_headers(response)
        status = response.status
        if status >= 200 and status not in (204, 304):
            headers.append(("Content-Length", str(len(response.body))))
        data = encode_response_head(status, headers)
        if request.method != "HEAD" and status not in (204, 304):
            data += response.body
        self.transport.write(data)
        self._answered = True

    # -- request bodies -----------------------------------------------------------------

    async def _read_body(self) -> bytes:
        if not self._body_unread:
            return b""
        self._body_unread = False
        head = self._head
        assert head is not None
        if head.expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        loop = self.server.loop
        self.deadline = loop.time() + self.server.config.body_timeout_s
        self.server.await_deadline(self)
        parts: list[bytes] = []
        try:
            while True:
                event = self.parser.next_event()
                if event is END_OF_MESSAGE:
                    return b"".join(parts)
                if event is NEED_DATA:
                    if self._eof or self._lost:
                        raise ClientGone("closed mid-body")
                    self.transport.resume_reading()
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                else:
                    parts.append(event)  # type: ignore[arg-type]
        except ProtocolError:
            # The framing is lost: whatever answers this request is the last one,
            # even if the handler catches this and responds itself.
            self._keep_alive = False
            raise
        finally:
            self.server.clear_deadline(self)
            self.deadline = 0.0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- streaming responses ------------------------------------------------------------

    async def _send_stream(self, request: Request, response: StreamingResponse) -> None:
        head = self._head
        assert head is not None
        headers = self._response_headers(response)
        if head.version == "1.0":
            # HTTP/1.0 has no chunked coding: the body ends when we close.
            self.chunked = False
            self._keep_alive = False
            headers = [h for h in headers if h[0] != "Connection"] + [("Connection", "close")]
        else:
            self.chunked = True
            headers.append(("Transfer-Encoding", "chunked"))
        if self._body_unread:
            await self._read_body()  # a POST stream's JSON body is read before it starts
        self.transport.write(encode_response_head(response.status, headers))
        self._answered = True
        if request.method == "HEAD":
            return
        self.response = response
        if self.server.config.stream_send_buffer_bytes:
            _set_send_buffer(self.transport.get_extra_info("socket"), self.server.config.stream_send_buffer_bytes)
        self.server.stream_started(self)
        try:
            await response.stream(self)
        except (ClientGone, ConnectionError):
            log.debug("client %s left during a stream", self.client)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream producer failed; ending the stream")
            self._keep_alive = False
        finally:
            if self.on_close is None:
                self.response = None
                self.server.stream_ended(self)
        if self.on_close is not None:
            return  # detached: the connection holds the stream open
        if self._lost:
            raise ClientGone()
        if self.chunked:
            self.transport.write(_LAST_CHUNK)
        await self.drain()

    # -- the Sink protocol (app.Sink) used by stream producers ---------------------------

    @property
    def config(self) -> Config:
        return self.server.config

    def frame(self, data: bytes) -> bytes:
        return encode_chunk(data) if self.chunked else data

    def write(self, data: bytes) -> None:
        if data and not self._closing:
            self.transport.write(encode_chunk(data) if self.chunked else data)

    def write_framed(self, wire: bytes) -> None:
        self.transport.write(wire)

    def buffered_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._closing or self.transport.is_closing()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all (a client over its budget)."""
        self._keep_alive = False
        self._closing = True
        self.transport.abort()

    async def drain(self) -> None:
        """Wait while the client's socket is full; raise ClientGone once it has left."""
        if self._lost:
            raise ClientGone()
        if not self._paused_writing:
            return
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = self.server.loop.create_future()
        await waiter

    def detach(self, on_close: Callable[[], None]) -> None:
        """Keep this stream open after ``stream()`` returns, with no task behind it.

        Whoever writes to it from now on (a broker) owns it; ``on_close`` runs once,
        when the client leaves or the server ends the stream.
        """
        self.on_close = on_close

    def finish(self) -> None:
        """End a detached stream cleanly; the connection then serves its next request."""
        on_close, self.on_close = self.on_close, None
        if on_close is None:
            return
        self.response = None
        self.server.stream_ended(self)
        on_close()
        if self._closing:
            return
        if self.chunked:
            self.transport.write(_LAST_CHUNK)
        if self._keep_alive and not self._eof:
            self._await_request()
        else:
            self._close()

    def end_stream(self) -> None:
        """End the live stream from outside (shutdown) and close the connection."""
        self._keep_alive = False
        self._closing = True
        if self.chunked and not self.transport.is_closing():
            self.transport.write(_LAST_CHUNK)
        self.transport.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()
