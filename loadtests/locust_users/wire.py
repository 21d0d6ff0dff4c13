"""HTTP/1.1 over one raw gevent socket, for the Locust users that hold streams.

Strategy: no HTTP library sits between a user and the bytes. A stream is one
gevent socket read with ``recv()``; the head is split off, and the body goes
through ``sse_server.http11.ChunkedDecoder`` (pure, bytes in, payload out) and, for event streams,
``sse_server.sse.EventStreamParser``. An idle stream therefore costs one parked
greenlet, one socket and its small buffers, and a read wakes exactly the
greenlet whose socket has data: that is what lets one Locust process on one core
hold thousands of streams. The timestamps a user reports are taken right where
the bytes arrive (``Head.first_byte_s`` is stamped before the head is parsed).

Every read is bounded: a socket timeout per recv, a cap on the head size and on
each chunk-size line, and a body that ends at its framing or at EOF.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gevent import socket

from sse_server.http11 import ChunkedDecoder, ProtocolError

__all__ = ["Connection", "Head", "HTTPFailure", "USER_AGENT"]

# The demo streams pages to browsers and buffers them for crawlers
# (html_stream.policy): this name must read as neither a bot nor HTTP/1.0.
USER_AGENT = "sse-server-loadtest/1.0 (Locust)"
MAX_HEAD_BYTES = 64 * 1024  # the server's own request-head limit; a response head is far smaller
RECV_BYTES = 64 * 1024


class HTTPFailure(Exception):
    """The server sent bytes a correct HTTP/1.1 server would not (the server's fault)."""


@dataclass(slots=True)
class Head:
    """A response head. ``headers`` has lower-cased names (the last one wins)."""

    status: int
    headers: dict[str, str]
    rest: bytes  # body bytes that arrived with the head
    first_byte_s: float  # time.perf_counter() when the first byte of the response arrived

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


class Connection:
    """One client connection to the server; keep-alive when the server allows it.

        conn = Connection("127.0.0.1", 8000, timeout_s=30)
        conn.send("GET", "/healthz")
        head = conn.read_head()
        body = b"".join(conn.body(head))
        conn.close()

    ``reusable`` is true after a body was read to its end on a connection the
    server keeps open; otherwise the caller opens a new one.
    """

    __slots__ = ("host", "port", "connect_timeout_s", "timeout_s", "sock", "reusable", "requests")

    def __init__(
        self, host: str, port: int, *, timeout_s: float, connect_timeout_s: float = 10.0
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.reusable = False
        self.requests = 0  # requests sent on the current socket

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout_s)
        self.sock = sock
        self.requests = 0

    def send(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> None:
        """Write one request (connecting first if needed)."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"User-Agent: {USER_AGENT}",
        ]
        lines += [f"{k}: {v}" for k, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        self.reusable = False
        self.requests += 1
        self.sock.sendall(data)

    def exchange(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> tuple[float, Head]:
        """Send a request and read its head: (time.perf_counter() at sending, head).

        A kept-alive connection can be closed by the server's idle timeout just as we
        send; like a browser, retry that once on a new connection (no response byte
        had arrived, so the request was not served).
        """
        for attempt in range(2):
            reused = self.sock is not None and self.requests > 0
            started = time.perf_counter()
            try:
                self.send(method, target, headers, body)
                return started, self.read_head()
            except ConnectionError:
                self.close()
                if not reused or attempt:
                    raise
        raise AssertionError("unreachable")

    def read_head(self) -> Head:
        """Read up to the end of the response head (bounded by MAX_HEAD_BYTES)."""
        assert self.sock is not None
        buf = self.sock.recv(RECV_BYTES)
        first_byte_s = time.perf_counter()
        while True:
            if not buf:
                raise ConnectionResetError("server closed the connection before a response head")
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD_BYTES:
                raise HTTPFailure(f"response head over {MAX_HEAD_BYTES} bytes")
            more = self.sock.recv(RECV_BYTES)
            if not more:
                raise ConnectionResetError("server closed the connection inside a response head")
            buf += more
        lines = buf[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HTTPFailure(f"malformed status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HTTPFailure("malformed header line")
            headers[name.strip().lower()] = value.strip()
        return Head(int(parts[1]), headers, buf[end + 4 :], first_byte_s)

    def body(self, head: Head) -> Iterator[bytes]:
        """Yield the body's payload as it arrives; ends where its framing ends."""
        assert self.sock is not None
        sock = self.sock
        keep = head.headers.get("connection", "").lower() != "close"
        if head.chunked:
            reader = ChunkedDecoder()
            data = head.rest
            while True:
                if data:
                    try:
                        payload = reader.feed(data)
                    except ProtocolError as e:
                        raise HTTPFailure(f"malformed chunked body: {e}") from None
                    if payload:
                        yield payload
                    if reader.done:
                        self.reusable = keep and not reader.extra
                        return
                data = sock.recv(RECV_BYTES)
                if not data:
                    raise ConnectionResetError("server closed the connection inside a chunked body")
        length_header = head.headers.get("content-length")
        if length_header is not None:
            if not length_header.isdigit():
                raise HTTPFailure("malformed Content-Length")
            left = int(length_header)
            data = head.rest
            while True:
                if len(data) > left:
                    raise HTTPFailure("more bytes than Content-Length")
                if data:
                    left -= len(data)
                    yield data
                if not left:
                    self.reusable = keep
                    return
                data = sock.recv(min(RECV_BYTES, left))
                if not data:
                    raise ConnectionResetError(
                        "server closed the connection inside a Content-Length body"
                    )
        if head.status in (204, 304) or 100 <= head.status < 200:
            self.reusable = keep
            return
        # No framing: the body runs to EOF and the connection is spent.
        data = head.rest
        while data:
            yield data
            data = sock.recv(RECV_BYTES)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self.reusable = False
        if sock is not None:
            sock.close()
