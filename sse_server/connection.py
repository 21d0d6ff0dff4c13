"""One client connection: an asyncio Protocol driving the pure parser.

This is the only module that touches a transport. Bytes arrive in
``data_received`` and go into the parser (http11.py); once a request head is
complete a task asks the app for a response (``server.handle``: the middleware
stack and the routes decide every answer) and an ``Exchange`` writes it, then the
task keeps serving any pipelined request already buffered. Between requests a
connection has no task.

Why a Protocol and not ``asyncio.start_server``: a StreamReader, a StreamWriter
and a task parked per connection cost about 10 KiB for every idle subscriber,
and a wake-up per read. Here an idle keep-alive connection or a channel
subscriber is this object, its transport and its parser: a few KiB, no task.

``Connection`` owns the transport, the parser, flow control and deadlines.
``Exchange`` is one request's response: its head, its framing (chunked on
HTTP/1.1, close-delimited on 1.0), the stream filters, the bytes sent, and the
Sink that a streaming response writes to. Streams come in two shapes. An
iterator-fed stream runs in the request task, which is cancelled the moment the
client leaves (EOF or reset). A push stream (a channel subscription) calls
``detach(on_close)`` and lets its task end; the engine delivers into the exchange
directly and ``on_close`` runs when the client leaves.

Timers are not per connection: a connection records ``deadline`` and the
server's single sweeper closes whoever is past it (408 if a head was started).

Admission happens here, on the accepted socket, before any app code: the global
cap (503) and the per-client limits of the peer's address (429 with Retry-After, a
few bytes, then close). A peer in ``--forwarded-allow-ips`` is a proxy: it is not
limited itself, its requests name their client (clients.py), and the connection
is counted against that client from its first such request.

With TLS the socket is accepted plain, admitted, then upgraded with
``loop.start_tls`` under ``head_timeout_s``: a handshake that stalls, or plain HTTP
sent to the TLS port, is closed without a word (a refused TLS connection gets no
429 either: the client could not read it before a handshake we will not spend).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Protocol

from .app import (
    AnyResponse,
    App,
    FinishCallbacks,
    Headers,
    Outcome,
    Request,
    Response,
    StreamFilter,
    StreamingResponse,
    run_finish_callbacks,
)
from .clients import TrustedPeers, forwarded_client
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

if TYPE_CHECKING:
    from .channels import EncodedEvent
    from .config import Config

__all__ = ["ClientGone", "Connection", "Exchange", "Host", "error_response_bytes"]

log = logging.getLogger("sse_server")

_MAX_DISCARD_BYTES = 64 * 1024  # unread request body we skip to keep a connection; more -> close
_READ_HIGH_WATER = 256 * 1024  # buffered request bytes before we stop reading the socket
_DRAINS_PER_YIELD = 16  # a producer that never fills the socket still lets others run this often
# At shutdown, how long a connection accepted with no request yet may take to send one.
_FIRST_REQUEST_GRACE_S = 0.5
_PIPELINED_PER_YIELD = 8  # requests served back to back before other connections get a turn
_LAST_CHUNK = encode_chunk(b"")
_TCP_KEEPALIVE = (  # half-open peers of long streams are found in about two minutes
    (getattr(socket, "TCP_KEEPIDLE", None), 60),
    (getattr(socket, "TCP_KEEPINTVL", None), 10),
    (getattr(socket, "TCP_KEEPCNT", None), 6),
)


class ClientGone(ConnectionError):
    """The peer closed or reset the connection; nothing more will reach it."""


def error_response_bytes(status: int, detail: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A complete minimal response that also closes the connection (for what the
    parser refuses, before any app code runs)."""
    body = f"{status} {REASONS.get(status, '')}: {detail}\n".encode("utf-8", "replace")
    headers = [
        ("Date", http_date().decode()),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(extra or ()),
    ]
    return encode_response_head(status, headers) + body


def _tcp_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock  # type: ignore[no-any-return]


def _configure_socket(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in _TCP_KEEPALIVE:
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except OSError:  # the peer may already be gone; connection_lost will follow
        pass


class Host(Protocol):
    """What a connection needs of the server that accepted it (server.Server is one)."""

    @property
    def config(self) -> Config: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def app(self) -> App: ...
    @property
    def connections(self) -> Sized: ...
    @property
    def shutting_down(self) -> bool: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def tls(self) -> ssl.SSLContext | None: ...
    @property
    def trusted(self) -> TrustedPeers: ...
    write_timeouts: int  # clients dropped for taking no bytes within write_timeout_s
    # Called with every response's Outcome when it ends (the access log, the metrics):
    # the server's own observers, with no middleware layer or registration per request.
    finish_hooks: tuple[Callable[[Outcome], None], ...]

    def admit(self, conn: Connection, key: str, new: bool) -> str | None: ...
    async def handle(self, request: Request) -> AnyResponse: ...
    def track(self, conn: Connection) -> None: ...
    def untrack(self, conn: Connection) -> None: ...
    def await_deadline(self, conn: Connection) -> None: ...
    def clear_deadline(self, conn: Connection) -> None: ...
    def stream_started(self, exchange: Exchange) -> None: ...
    def stream_ended(self, exchange: Exchange) -> None: ...


class Connection(asyncio.Protocol):
    __slots__ = (
        "server", "transport", "parser", "client", "deadline", "task", "stream",
        "scheme", "proxied", "limit_key", "_handshaking",
        "_head", "_keep_alive", "_body_unread", "_waiter", "_drain_waiter", "_paused_writing",
        "_eof", "_lost", "_closing", "_head_started", "_answered", "_unyielded", "_requested",
    )

    def __init__(self, server: Host) -> None:
        self.server = server
        cfg = server.config
        self.parser = RequestParser(
            cfg.max_request_line_bytes, cfg.max_header_bytes, cfg.max_header_count, cfg.max_body_bytes
        )
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.deadline = 0.0  # loop time after which the sweeper acts; 0 = none
        self.task: asyncio.Task[None] | None = None  # the request being served, if any
        self.stream: Exchange | None = None  # the live streaming response, if any
        self.scheme = "http"
        self.proxied = False  # the peer is a trusted proxy: its requests name their client
        self.limit_key: str | None = None  # the client this connection is counted against
        self._handshaking = False
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
        self._unyielded = 0  # drains since this connection last let the loop run others
        self._requested = False  # a request head has arrived on this connection

    @property
    def closing(self) -> bool:
        return self._closing or self.transport.is_closing()

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        server = self.server
        tls = server.tls
        if server.shutting_down or len(server.connections) >= server.max_connections:
            retry = "1" if server.shutting_down else "5"
            self._refuse(503, "server is at its connection limit", retry, tls is not None)
            return
        host = self.client[0] if self.client is not None else None
        if host is not None:
            if host in server.trusted:
                self.proxied = True
            else:
                refused = server.admit(self, host, True)
                if refused is not None:
                    self._refuse(429, "too many connections from your address", refused, tls is not None)
                    return
        _configure_socket(_tcp_socket(transport))
        server.track(self)
        if tls is not None:
            self.scheme = "https"
            self._handshaking = True
            self.transport.pause_reading()  # the ClientHello is for start_tls, not the parser
            self.task = server.loop.create_task(self._handshake(tls))
            return
        self._await_request()

    def _refuse(self, status: int, detail: str, retry: str, tls: bool) -> None:
        self._closing = True
        if not tls:
            self.transport.write(self._error_bytes(status, detail, [("Retry-After", retry)]))
        self.transport.close()

    async def _handshake(self, tls: ssl.SSLContext) -> None:
        raw = self.transport
        try:
            transport = await self.server.loop.start_tls(
                raw, self, tls, server_side=True, ssl_handshake_timeout=self.server.config.head_timeout_s,
            )
        except (OSError, asyncio.CancelledError) as e:  # ssl.SSLError, a timeout, a reset, shutdown
            log.debug("TLS handshake with %s failed: %r", self.client, e)
            self._closing = True
            raw.abort()
            self.server.untrack(self)  # the TLS layer may not report a connection lost mid-handshake
            return
        finally:
            self.task = None
        self._handshaking = False
        self.transport = transport  # type: ignore[assignment]
        if self._lost:
            return
        if self._eof and not self.parser.buffered:
            self._close()
            return
        self._await_request()

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        if self._handshaking:
            return  # decrypted before start_tls returned: served once the handshake task resumes
        if self.stream is not None:
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
        if self.stream is not None or self.task is None:
            # A stream's client left, or an idle connection ended: close now. A
            # request in progress may still be answered over the half-closed socket.
            self._closing = True
            return False
        self._wake()
        # TLS has no half-close: asyncio closes the transport whatever we return (and
        # warns if we ask otherwise), so the request in progress ends with it.
        return self.scheme != "https"

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._closing = True
        self.server.untrack(self)
        self._wake()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientGone())
            waiter.exception()  # retrieved here so an unawaited drain logs nothing
        stream = self.stream
        if stream is not None and stream.on_close is not None:
            stream.closed(completed=False)  # a detached stream: nobody else will notice
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client left: stop the handler or producer

    def pause_writing(self) -> None:
        # The client has stopped taking bytes: it has write_timeout_s to take some
        # again, or it is dropped like a subscriber over its budget.
        self._paused_writing = True
        self.deadline = self.server.loop.time() + self.server.config.write_timeout_s
        self.server.await_deadline(self)

    def resume_writing(self) -> None:
        self._paused_writing = False
        self.server.clear_deadline(self)
        self.deadline = 0.0
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
        self._requested = True
        self.task = self.server.loop.create_task(self._serve(head))

    def on_deadline(self) -> None:
        """Called by the server's sweeper once ``deadline`` has passed."""
        self.deadline = 0.0
        if self._paused_writing:
            log.debug("client %s took nothing for %.0f s; dropping it", self.client,
                      self.server.config.write_timeout_s)
            self.server.write_timeouts += 1
            self.abort()
        elif self.task is None and not self.parser.idle and self.parser.in_head:
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
        if self._handshaking and self.task is not None:
            self.task.cancel()
            return True
        if self.task is not None or self.stream is not None or not self.parser.idle:
            return False
        if not self._requested:
            # Accepted, nothing received yet: its first request is on its way (a worker
            # restarting under --workers accepted it just before it stopped), and a
            # client retries a request only on a reused connection (RFC 9112 §9.3.1).
            # It gets a moment to send it; the sweeper closes a silent one then.
            grace = self.server.loop.time() + _FIRST_REQUEST_GRACE_S
            self.deadline = min(self.deadline, grace) if self.deadline else grace
            self.server.await_deadline(self)
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
        served = 0
        try:
            while True:
                await self._respond(head)
                served += 1
                if self.stream is not None:
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
                head = event  # pipelined: serve it in this same task, taking turns with others
                if served % _PIPELINED_PER_YIELD == 0:
                    await asyncio.sleep(0)
        except ConnectionError:
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
        client = self.client
        scheme = self.scheme
        trusted = self.proxied
        if trusted:
            client, proto, trusted = forwarded_client(client, head.headers, self.server.trusted)
            if proto is not None:
                scheme = proto
            if not trusted and client is not None and client[0] != self.limit_key:
                refused = self.server.admit(self, client[0], self.limit_key is None)
                if refused is not None:
                    self._write_and_close(self._error_bytes(
                        429, "too many connections from your address", [("Retry-After", refused)]))
                    return
        request = Request(
            head.method, head.target, head.path, head.query, head.version,
            Headers(head.headers), client, self._read_body, self.server.app, scheme, trusted,
        )
        exchange = Exchange(self, request)
        try:
            response = await self.server.handle(request)
            if isinstance(response, StreamingResponse):
                try:
                    await exchange.send_stream(response)
                except ProtocolError as e:  # a POST stream's body, read before the head
                    self._fail(e)
                    raise ClientGone() from None
                return
            exchange.send_plain(response)
            if self._paused_writing:
                await self.drain()
            if self._body_unread and self._keep_alive:
                try:
                    await self._read_body()  # skip what the handler left, to reach the next request
                except ProtocolError:
                    raise ClientGone() from None
        finally:
            if not exchange.done and exchange.on_close is None:
                exchange.closed(completed=False)  # the request ended without a full response

    def response_headers(self, response: Response | StreamingResponse) -> list[tuple[str, str]]:
        """The response's headers plus ours; settles whether the connection stays open."""
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
        headers = []
        for name, value in response.headers:
            if name.lower() == "connection":  # the app asks to close (after an error); we frame it
                if value.lower() == "close":
                    self._keep_alive = False
                continue
            headers.append((name, value))
        headers.append(("Date", http_date().decode()))
        headers.append(("Server", self.server.config.server_header))
        if not self._keep_alive:
            headers.append(("Connection", "close"))
        elif head.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        return headers

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
                    assert isinstance(event, bytes)
                    parts.append(event)
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

    # -- flow control ---------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait while the client's socket is full; raise ClientGone once it is leaving.

        A transport that is closing (the peer reset, or we aborted it) takes no more
        bytes: raising here, not on connection_lost a loop turn later, is what stops
        a producer that never fills the socket from spinning on a dead connection.
        Such a producer also yields to the loop every few drains, so it cannot
        starve other connections.
        """
        if self._lost or self.closing:
            raise ClientGone()
        if not self._paused_writing:
            self._unyielded += 1
            if self._unyielded >= _DRAINS_PER_YIELD:
                self._unyielded = 0
                await asyncio.sleep(0)
                if self._lost or self.closing:
                    raise ClientGone()
            return
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = self.server.loop.create_future()
        await waiter

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all (a client over its budget)."""
        self._keep_alive = False
        self._closing = True
        self.transport.abort()

    def release_head(self) -> None:
        """A detached stream needs its request head no more (it is answered, its body read)."""
        self._head = None

    def stream_done(self, exchange: Exchange) -> None:
        """A streaming response ended; serve the next request or close."""
        self.stream = None
        self.server.stream_ended(exchange)

    def resume_after_detached(self) -> None:
        """A detached stream ended cleanly: back to waiting for the next request."""
        if self._keep_alive and not self._eof:
            self._await_request()
        else:
            self._close()


class Exchange:
    """One request's response on a connection, and the Sink its stream writes to.

    Counts what it sends and reports the ``Outcome`` to the server's finish hooks and
    the request's ``on_finish`` callbacks exactly once, when the response has ended
    for whatever reason.
    """

    __slots__ = (
        "conn", "transport", "request", "method", "target", "http_version", "client", "started", "status", "chunked",
        "filters", "body_bytes", "response", "on_close", "done", "_on_finish",
    )

    def __init__(self, conn: Connection, request: Request) -> None:
        self.conn = conn
        self.transport = conn.transport
        self.request: Request | None = request  # kept past the head only if it wants the outcome
        self.method = request.method
        self.target = request.target
        self.client = request.client
        self.http_version = request.http_version
        self.started = time.perf_counter()
        self.status = 0  # 0 until a head went out
        self.chunked = True
        self.filters: tuple[StreamFilter, ...] = ()
        self.body_bytes = 0
        self.response: StreamingResponse | None = None
        self.on_close: Callable[[], None] | None = None  # set by detach()
        self.done = False
        self._on_finish: FinishCallbacks = None  # taken from the request by detach()

    # -- plain responses ------------------------------------------------------------

    def send_plain(self, response: Response) -> None:
        conn = self.conn
        headers = conn.response_headers(response)
        status = response.status
        if status >= 200 and status not in (204, 304):
            headers.append(("Content-Length", str(len(response.body))))
        data = encode_response_head(status, headers)
        if self.method != "HEAD" and status not in (204, 304):
            data += response.body
            self.body_bytes = len(response.body)
        self.transport.write(data)
        self.status = status
        conn._answered = True
        self.closed(completed=True)

    # -- streaming responses ----------------------------------------------------------

    async def send_stream(self, response: StreamingResponse) -> None:
        conn = self.conn
        headers = conn.response_headers(response)
        if self.http_version == "1.0":
            # HTTP/1.0 has no chunked coding: the body ends when we close.
            self.chunked = False
            conn._keep_alive = False
            headers = [h for h in headers if h[0] != "Connection"] + [("Connection", "close")]
        else:
            headers.append(("Transfer-Encoding", "chunked"))
        if conn._body_unread:
            await conn._read_body()  # a POST stream's JSON body is read before it starts
        self.transport.write(encode_response_head(response.status, headers))
        self.status = response.status
        conn._answered = True
        if self.method == "HEAD":
            self.closed(completed=True)
            return
        self.response = response
        self.filters = response.filters
        conn.stream = self
        config = conn.server.config
        if config.stream_send_buffer_bytes:
            _set_send_buffer(_tcp_socket(self.transport), config.stream_send_buffer_bytes)
        conn.server.stream_started(self)
        completed = False
        try:
            await response.stream(self)
            completed = True
        except ConnectionError:
            log.debug("client %s left during a stream", conn.client)
            raise
        except Exception:
            log.exception("stream producer failed; ending the stream")
            conn._keep_alive = False
        finally:
            if self.on_close is None:
                conn.stream_done(self)
                if not completed:
                    self.closed(completed=False)
        if self.on_close is not None:
            return  # detached: the connection holds the stream open
        if conn._lost:
            raise ClientGone()
        if not completed and not response.cut_in_band:
            conn.abort()  # no last chunk: the client must see that the body is cut
            return
        self._write_end()
        self.closed(completed=completed)
        await conn.drain()

    def _write_end(self) -> None:
        if self.conn.closing:
            return
        filters = self.filters
        for i, stream_filter in enumerate(filters):  # innermost first; its tail passes the outer ones
            tail = stream_filter.close()
            for outer in filters[i + 1:]:
                tail = outer(tail) if tail else tail
            if tail:
                self._send(tail)
        if self.chunked:
            self.body_bytes += len(_LAST_CHUNK)
            self.transport.write(_LAST_CHUNK)

    def closed(self, completed: bool) -> None:
        """The response has ended: tell the request's on_finish callbacks, once."""
        if self.done:
            return
        self.done = True
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            self.conn.stream_done(self)
            try:
                on_close()
            except Exception:
                log.exception("stream close hook failed")
        response = self.response
        request, self.request, self.response = self.request, None, None  # no cycles left to collect
        # A detached stream took its request's callbacks; a plain response's are on its request.
        callbacks, self._on_finish = self._on_finish, None
        if request is not None:
            callbacks = request.take_finish_callbacks()
        hooks = self.conn.server.finish_hooks
        if hooks or callbacks is not None:
            outcome = Outcome(
                self.status, self.body_bytes, time.perf_counter() - self.started, response is not None, completed,
                response.events if response is not None else 0,
                self.method, self.target, self.http_version, self.client,
            )
            for hook in hooks:
                try:
                    hook(outcome)
                except Exception:
                    log.exception("a finish hook of the server failed")
            run_finish_callbacks(callbacks, outcome)

    # -- the Sink protocol (app.Sink) used by stream producers ---------------------------

    @property
    def config(self) -> Config:
        return self.conn.server.config

    def write(self, data: bytes) -> None:
        if not data or self.conn.closing:
            return
        for stream_filter in self.filters:
            data = stream_filter(data)
            if not data:
                return
        self._send(data)

    def _send(self, data: bytes) -> None:
        wire = encode_chunk(data) if self.chunked else data
        self.body_bytes += len(wire)
        self.transport.write(wire)

    def deliver(self, event: EncodedEvent) -> int:
        """Write an event encoded once for many streams, framing it once for all of them;
        return the bytes still unsent, or -1 if the connection is closing (nothing written).

        This is the fan-out hot path: one call per subscriber per event, so it answers
        "is it closing" and "how far behind is it" itself rather than in two more calls.
        """
        transport = self.transport
        if self.conn._closing or transport.is_closing():
            return -1
        if self.filters:
            self.write(event.raw)  # each filtered stream transforms its own copy
            return transport.get_write_buffer_size()
        if self.chunked:
            wire = event.framed
            if wire is None:
                wire = event.framed = encode_chunk(event.raw)
        else:
            wire = event.raw
        self.body_bytes += len(wire)
        transport.write(wire)
        return transport.get_write_buffer_size()

    def buffered_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self.conn.closing

    def abort(self) -> None:
        self.conn.abort()

    async def drain(self) -> None:
        await self.conn.drain()

    def detach(self, on_close: Callable[[], None]) -> None:
        """Keep this stream open after ``stream()`` returns, with no task behind it.

        Whoever writes to it from now on (a channel engine) owns it; ``on_close``
        runs once, when the client leaves or the stream ends.
        """
        self.on_close = on_close
        request, self.request = self.request, None
        if request is not None:
            # An idle subscriber holds no request: only the callbacks waiting for its
            # outcome (which keep what they need of it, e.g. the access log's fields).
            self._on_finish = request.take_finish_callbacks()
        self.conn.release_head()  # nor the request head and its header list

    def finish(self) -> None:
        """End a detached stream cleanly; the connection then serves its next request."""
        if self.on_close is None:
            return
        self.closed(completed=True)
        if self.conn.closing:
            return
        self._write_end()
        self.conn.resume_after_detached()

    def end_stream(self) -> None:
        """End the live stream from outside (shutdown) and close the connection:
        cleanly if the stream said so in-band, else aborted, so the cut shows."""
        conn = self.conn
        conn._keep_alive = False
        if self.response is not None and not self.response.cut_in_band:
            conn.abort()
        else:
            self._write_end()
            conn._close()
        if conn.task is not None and not conn.task.done():
            conn.task.cancel()


def _set_send_buffer(sock: socket.socket | None, size: int) -> None:
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError:  # gone already; the next write will say so
            pass
