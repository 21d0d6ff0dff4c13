"""A small HTTP/1.1 client on asyncio streams, for relaying an upstream API.

    endpoint = Endpoint.parse("https://api.example/v1")
    response = await request(endpoint, "POST", "/chat/completions", body=b"{...}",
                             headers=[("Content-Type", "application/json")])
    try:
        while piece := await response.read():
            ...
    finally:
        response.close()

Strategy. One request per connection (``Connection: close``): the relay's
requests are long streams, so a pool would save one loopback or TLS handshake
per generation and add a class of stale-connection bugs. The response head and
the body framing are parsed by pure helpers (bytes in, values out); the asyncio
part only reads, each wait under its own deadline: connect (TCP and TLS), first
byte (the whole response head), idle (each body read). A silent upstream
therefore ends in an ``UpstreamError`` that the caller turns into a clean error
for its client, never a hung stream. ``close()`` aborts the socket, so the
upstream sees our client leave the moment it leaves.

What reaches our clients names no upstream host, port or address: an error's
message says what failed in general words (the operator's log has the details),
and a path segment that came from a client is encoded with ``path_segment``, which
refuses ``.`` and ``..`` so a client cannot climb out of the base path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from ..app import header_value
from ..http11 import ChunkedDecoder, ProtocolError
from ..untrusted import BadInteger, NotAnInteger, parse_int

__all__ = [
    "Endpoint",
    "UpstreamError",
    "UpstreamResponse",
    "encode_request_head",
    "parse_response_head",
    "path_segment",
    "request",
]

log = logging.getLogger("sse_server")

MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is not an API we relay
_READ_SIZE = 64 * 1024
_MAX_CONTENT_LENGTH = 1 << 63  # only bounds the parse: callers read a body up to their own limit


class UpstreamError(Exception):
    """The upstream failed us: unreachable, too slow, or not speaking HTTP/1.1.

    ``status`` is what to answer our own client with (502, or 504 for timeouts)
    and ``code`` a short machine-readable reason for its error body.
    """

    def __init__(self, message: str, status: int = 502, code: str = "upstream_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


_default_ssl: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _default_ssl
    if _default_ssl is None:  # loading the CA store costs milliseconds: once per process
        _default_ssl = ssl.create_default_context()
    return _default_ssl


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the upstream lives.

    >>> Endpoint.parse("http://127.0.0.1:8001")
    Endpoint(scheme='http', host='127.0.0.1', port=8001, base_path='/v1')
    >>> Endpoint.parse("https://api.example/openai/v1/").base_path
    '/openai/v1'
    """

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """An OpenAI-style base URL; a URL with no path gets ``/v1`` as clients assume."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"upstream URL must be http:// or https://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"upstream URL has no host: {url!r}")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"upstream URL must not carry a query, fragment or credentials: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path.rstrip("/") or "/v1"
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"


# -- pure: request paths, response head and body framing (RFC 9112) ------------------


def path_segment(text: str) -> str:
    """One path segment from client input, percent-encoded (``/`` included); ValueError for
    ``.`` and ``..``, which RFC 3986 §5.2.4 resolves upward however they are spelled.

    >>> path_segment("gpt-4.1"), path_segment("a/b?c")
    ('gpt-4.1', 'a%2Fb%3Fc')
    """
    if text in (".", ".."):
        raise ValueError(f"{text!r} is not a name")
    return quote(text, safe="")


def _climbs(path: str) -> bool:
    """Whether ``path`` holds a dot segment, plain or percent-encoded (%2e%2e)."""
    return any(unquote(segment) in (".", "..") for segment in path.split("/"))


def _reason(e: OSError) -> str:
    """What failed, in words that name no host, port or address (asyncio's own messages do)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return "its TLS certificate was not accepted"
    if isinstance(e, ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(e, socket.gaierror):
        return "its name did not resolve"
    if e.errno:
        return os.strerror(e.errno).lower()
    return "connection failed"


def parse_response_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers (names lower-cased) of a head without its blank line.

    >>> parse_response_head(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2")
    (200, [('content-length', '2')])
    """
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise UpstreamError(f"upstream answered something that is not HTTP/1.1: {lines[0][:80]!r}",
                            code="upstream_bad_response")
    code = status_line[1]
    if len(code) != 3 or not code.isdigit():
        raise UpstreamError(f"upstream sent a bad status code {code[:10]!r}", code="upstream_bad_response")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise UpstreamError(f"upstream sent a malformed header line {line[:80]!r}",
                                code="upstream_bad_response")
        headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
    return int(code), headers


def body_framing(method: str, status: int, headers: list[tuple[str, str]]) -> tuple[str, int]:
    """("none" | "chunked" | "length" | "close", length) per RFC 9112 §6.3."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return "none", 0
    te = header_value(headers, "transfer-encoding")
    if te is not None:
        if te.lower().rsplit(",", 1)[-1].strip() == "chunked":
            return "chunked", 0
        return "close", 0  # another final coding: the body runs until close (§6.3 item 4)
    cl = header_value(headers, "content-length")
    if cl is not None:
        values = {v.strip() for v in cl.split(",")}
        value = values.pop()
        try:
            if values:
                raise NotAnInteger()
            # ASCII digits only, and no int() of thousands of digits (it raises ValueError).
            return "length", parse_int(value, 0, _MAX_CONTENT_LENGTH)
        except BadInteger:
            raise UpstreamError(f"upstream sent a bad Content-Length {cl[:40]!r}",
                                code="upstream_bad_response") from None
    return "close", 0


def encode_request_head(
    endpoint: Endpoint, method: str, path: str, headers: list[tuple[str, str]], body_bytes: int,
) -> bytes:
    """The request head; ValueError for a path or header that would end a line early.

    >>> encode_request_head(Endpoint.parse("http://h:81"), "GET", "/models", [], 0)
    b'GET /v1/models HTTP/1.1\\r\\nHost: h:81\\r\\nConnection: close\\r\\n\\r\\n'
    """
    if _climbs(path):  # a path built without path_segment() from a client's ".."
        raise ValueError("upstream request path holds a dot segment")
    target = endpoint.base_path + path
    lines = [f"{method} {target} HTTP/1.1", f"Host: {endpoint.authority}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body_bytes or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body_bytes}")
    lines.append("Connection: close")
    # A CR, LF or NUL from a path parameter or an environment variable would let it
    # write headers (or a second request) of its own: request splitting.
    if any(c in target for c in " \r\n\0") or any(c in v for _, v in headers for c in "\r\n\0"):
        raise ValueError("upstream request path or header holds a space, CR, LF or NUL")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- asyncio: one request, one connection ----------------------------------------------


class UpstreamResponse:
    """A response whose head has arrived; read the body with ``read()``, then ``close()``."""

    __slots__ = ("_chunks", "_done", "_framing", "_idle_s", "_left", "_reader", "_writer", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framing: tuple[str, int],
        idle_timeout_s: float,
    ) -> None:
        self.status = status
        self.headers = headers
        self._reader = reader
        self._writer = writer
        self._framing, self._left = framing
        self._chunks = ChunkedDecoder() if self._framing == "chunked" else None
        self._idle_s = idle_timeout_s
        self._done = self._framing == "none" or (self._framing == "length" and self._left == 0)

    async def _read_raw(self) -> bytes:
        try:
            async with asyncio.timeout(self._idle_s):
                return await self._reader.read(_READ_SIZE)
        except TimeoutError:
            raise UpstreamError(f"upstream sent nothing for {self._idle_s:g} s", 504,
                                "upstream_idle_timeout") from None
        except OSError as e:  # reset by the peer, TLS failure mid-body
            log.warning("upstream connection failed mid-body: %s", e)
            raise UpstreamError(f"upstream connection failed mid-body: {_reason(e)}",
                                code="upstream_closed") from None

    async def read(self) -> bytes:
        """The next piece of body, b"" once it is complete. Raises UpstreamError if the
        upstream stops mid-body or goes silent past the idle timeout."""
        while not self._done:
            data = await self._read_raw()
            if self._framing == "close":
                if not data:
                    self._done = True
                return data
            if not data:
                raise UpstreamError("upstream closed the connection mid-body", code="upstream_closed")
            if self._chunks is not None:
                try:
                    payload = self._chunks.feed(data)
                except ProtocolError as e:
                    raise UpstreamError(f"upstream sent a bad chunked body: {e}",
                                        code="upstream_bad_response") from None
                self._done = self._chunks.done
            else:
                payload = data[: self._left]
                self._left -= len(payload)
                self._done = self._left == 0
            if payload:
                return payload
        return b""

    async def read_all(self, limit: int) -> bytes:
        parts, size = [], 0
        while piece := await self.read():
            size += len(piece)
            if size > limit:
                raise UpstreamError(f"upstream body over {limit} bytes", code="upstream_too_large")
            parts.append(piece)
        return b"".join(parts)

    def close(self) -> None:
        """Drop the connection now; an upstream still streaming sees us leave."""
        self._writer.transport.abort()


async def request(
    endpoint: Endpoint,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    connect_timeout_s: float = 10.0,
    first_byte_timeout_s: float = 60.0,
    idle_timeout_s: float = 120.0,
) -> UpstreamResponse:
    """Send one request to ``endpoint.base_path + path``; return once its head is in."""
    try:
        head = encode_request_head(endpoint, method, path, headers or [], len(body))
    except ValueError as e:  # refused before connecting
        raise UpstreamError(str(e), code="upstream_bad_request") from None
    tls = _ssl_context() if endpoint.scheme == "https" else None
    try:
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=tls,
                server_hostname=endpoint.host if tls else None, limit=MAX_HEAD_BYTES,
            )
    except TimeoutError:
        raise UpstreamError(f"no connection to the upstream within {connect_timeout_s:g} s", 504,
                            "upstream_connect_timeout") from None
    except OSError as e:  # refused, unreachable, DNS, certificate
        log.warning("cannot reach the upstream %s: %s", endpoint.url, e)
        raise UpstreamError(f"cannot reach the upstream: {_reason(e)}", code="upstream_unreachable") from None
    try:
        writer.write(head + body)
        try:
            async with asyncio.timeout(first_byte_timeout_s):
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    status, response_headers = parse_response_head(head[:-4])
                    if status >= 200 or status == 101:
                        break  # 1xx interim responses (100, 103) precede the real one
        except TimeoutError:
            raise UpstreamError(f"upstream did not answer within {first_byte_timeout_s:g} s", 504,
                                "upstream_timeout") from None
        except asyncio.IncompleteReadError:
            raise UpstreamError("upstream closed the connection without answering",
                                code="upstream_closed") from None
        except asyncio.LimitOverrunError:
            raise UpstreamError(f"upstream response head over {MAX_HEAD_BYTES} bytes",
                                code="upstream_bad_response") from None
        except OSError as e:
            log.warning("upstream connection to %s failed: %s", endpoint.url, e)
            raise UpstreamError(f"upstream connection failed: {_reason(e)}", code="upstream_closed") from None
        framing = body_framing(method, status, response_headers)
        return UpstreamResponse(status, response_headers, reader, writer, framing, idle_timeout_s)
    except BaseException:  # including cancellation: never leave the socket open
        writer.transport.abort()
        raise
