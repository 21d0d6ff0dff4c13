"""HTTP/1.1 message parsing and response framing, without I/O.

Parses requests from bytes; never reads a socket (connection.py does). ``feed()``
buffers input and ``next_event()`` returns the next complete thing: a
``RequestHead``, a piece of body (``bytes``), ``END_OF_MESSAGE`` or ``NEED_DATA``.
Pipelined requests simply follow one another in the buffer.

The parser is strict where leniency lets two parsers disagree about where a
message ends (RFC 9112 §6.3, §11.2 "request smuggling"): both Content-Length and
Transfer-Encoding, differing lengths, a Transfer-Encoding other than a final
``chunked``, obs-fold, bare CR or LF, NUL and other controls are all rejected.
Malformed input raises ``ProtocolError`` with the status to answer; after that
the parser stays broken, so a connection is never reused past a framing error.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "ChunkedDecoder",
    "END_OF_MESSAGE",
    "NEED_DATA",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "REASONS",
    "encode_chunk",
    "encode_response_head",
    "http_date",
]


class ProtocolError(Exception):
    """The peer sent bytes we will not accept as HTTP/1.1."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Sentinel("NEED_DATA")
END_OF_MESSAGE: Final = _Sentinel("END_OF_MESSAGE")

# RFC 9110 §5.6.2 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Controls that may not appear anywhere in a head (HTAB is legal inside values,
# CR and LF are line ends and checked on their own).
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET_BAD = re.compile(r"[\x00-\x20\x7f-\xff]")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)\Z")
_HEX = re.compile(r"[0-9A-Fa-f]+\Z")

KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"}
)
_MAX_CHUNK_LINE = 4096  # size line incl. extensions; bounds what a chunk header may buffer
_MAX_LEADING_CRLF = 8  # RFC 9112 §2.2: tolerate a few empty lines between pipelined requests


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    path: str
    query: str
    version: str  # "1.0" or "1.1"
    headers: list[tuple[str, str]]  # names lower-cased
    keep_alive: bool
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def has_body(self) -> bool:
        """Whether body events and END_OF_MESSAGE follow this head."""
        return self.chunked or bool(self.content_length)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


# Parser states.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _ERROR = range(7)


class RequestParser:
    """Incremental HTTP/1.1 request parser for one connection."""

    __slots__ = (
        "_buf", "_state", "_remaining", "_body_seen", "_head", "_scanned", "_blank_lines",
        "max_request_line_bytes", "max_header_bytes", "max_header_count", "max_body_bytes",
    )

    def __init__(
        self,
        max_request_line_bytes: int = 8 * 1024,
        max_header_bytes: int = 64 * 1024,
        max_header_count: int = 100,
        max_body_bytes: int = 1024 * 1024,
    ) -> None:
        self._buf = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._body_seen = 0
        self._head: RequestHead | None = None
        # Bytes of an incomplete head or trailer block already checked: each feed scans
        # only what is new, so a head dripped a byte at a time costs linear, not
        # quadratic, work.
        self._scanned = 0
        self._blank_lines = 0  # counted across feeds so the limit holds however bytes arrive
        self.max_request_line_bytes = max_request_line_bytes
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.max_body_bytes = max_body_bytes

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """True between messages with nothing buffered: the connection may be closed quietly."""
        return self._state == _HEAD and not self._buf

    @property
    def in_head(self) -> bool:
        return self._state == _HEAD

    def next_event(self) -> RequestHead | bytes | _Sentinel:
        try:
            return self._next_event()
        except ProtocolError:
            self._state = _ERROR
            raise

    def _next_event(self) -> RequestHead | bytes | _Sentinel:
        state = self._state
        if state == _HEAD:
            return self._parse_head()
        if state == _BODY:
            if self._remaining == 0:
                return self._finish()
            if not self._buf:
                return NEED_DATA
            piece = bytes(self._buf[: self._remaining])
            del self._buf[: len(piece)]
            self._remaining -= len(piece)
            return piece
        if state == _CHUNK_SIZE:
            return self._parse_chunk_size()
        if state == _CHUNK_DATA:
            if not self._buf:
                return NEED_DATA
            piece = bytes(self._buf[: self._remaining])
            del self._buf[: len(piece)]
            self._remaining -= len(piece)
            if self._remaining == 0:
                self._state = _CHUNK_CRLF
            return piece
        if state == _CHUNK_CRLF:
            if len(self._buf) < 2:
                if self._buf and self._buf[0] != 0x0D:
                    raise ProtocolError("chunk data not followed by CRLF")
                return NEED_DATA
            if self._buf[:2] != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
            del self._buf[:2]
            self._state = _CHUNK_SIZE
            return self._parse_chunk_size()
        if state == _TRAILERS:
            return self._parse_trailers()
        raise ProtocolError("connection is unusable after a framing error")

    def _finish(self) -> _Sentinel:
        self._state = _HEAD
        self._head = None
        self._scanned = 0
        return END_OF_MESSAGE

    # -- head ---------------------------------------------------------------

    def _parse_head(self) -> RequestHead | _Sentinel:
        buf = self._buf
        while buf[:2] == b"\r\n":  # RFC 9112 §2.2: empty lines before a request line
            del buf[:2]
            self._scanned = 0
            self._blank_lines += 1
            if self._blank_lines > _MAX_LEADING_CRLF:
                raise ProtocolError("too many empty lines before the request line")
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3), self.max_header_bytes + 4)
        if end < 0:
            self._check_incomplete_head()
            self._scanned = len(buf)
            return NEED_DATA
        head_bytes = bytes(buf[:end])
        del buf[: end + 4]
        self._scanned = 0
        self._blank_lines = 0
        head = self._parse_head_bytes(head_bytes)
        self._head = head
        if head.chunked:
            self._state = _CHUNK_SIZE
            self._body_seen = 0
        elif head.content_length:
            self._state = _BODY
            self._remaining = head.content_length
        # else: no body; the next bytes are the next request's head
        return head

    def _check_incomplete_head(self) -> None:
        """Fail early on a head that can never be valid rather than wait for the deadline."""
        buf = self._buf
        limit = self.max_request_line_bytes
        # limit + 1: a CR at the end may yet turn out to end a line of exactly limit bytes
        if len(buf) > limit + 1 and buf.find(b"\r\n", 0, limit + 2) < 0:
            raise ProtocolError(f"request line over {limit} bytes", status=414)
        if len(buf) > self.max_header_bytes + 3:  # + 3: the blank line may be arriving
            raise ProtocolError(f"header block over {self.max_header_bytes} bytes", status=431)
        # Only the bytes after _scanned are new; a CR that ended the last feed may
        # have been waiting for its LF, so CR/LF pairs are counted from one before.
        new = self._scanned
        pair_from = max(0, new - 1)
        crlf = buf.count(b"\r\n", pair_from)
        if buf.count(b"\n", new) != crlf:
            raise ProtocolError("bare LF in request head")
        if buf.count(b"\r", pair_from) - (1 if buf.endswith(b"\r") else 0) != crlf:
            raise ProtocolError("bare CR in request head")
        if buf.find(b"\0", new) >= 0:
            raise ProtocolError("NUL in request head")

    def _parse_head_bytes(self, raw: bytes) -> RequestHead:
        if len(raw) > self.max_header_bytes:
            raise ProtocolError(f"header block over {self.max_header_bytes} bytes", status=431)
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        request_line = lines[0]
        if len(request_line) > self.max_request_line_bytes:
            raise ProtocolError(f"request line over {self.max_request_line_bytes} bytes", status=414)
        crlf = text.count("\r\n")
        if text.count("\r") != crlf or text.count("\n") != crlf:
            raise ProtocolError("bare CR or LF in request head")
        method, target, version = self._parse_request_line(request_line)

        if len(lines) - 1 > self.max_header_count:
            raise ProtocolError(f"more than {self.max_header_count} headers", status=431)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            headers.append(_parse_header_line(line))
        return self._interpret(method, target, version, headers)

    def _parse_request_line(self, line: str) -> tuple[str, str, str]:
        parts = line.split(" ")
        if len(parts) != 3:
            raise ProtocolError("request line is not 'METHOD target HTTP/x.y'")
        method, target, version = parts
        if not _TOKEN.match(method):
            raise ProtocolError("method is not a token")
        m = _VERSION.match(version)
        if m is None:
            raise ProtocolError("malformed HTTP version")
        if m.group(1) != "1":
            raise ProtocolError(f"HTTP version {m.group(1)}.{m.group(2)} not supported", status=505)
        if not target or _TARGET_BAD.search(target):
            raise ProtocolError("malformed request target")
        if method not in KNOWN_METHODS:
            raise ProtocolError(f"method {method} not implemented", status=501)
        return method, target, "1.1" if m.group(2) != "0" else "1.0"

    def _interpret(
        self, method: str, target: str, version: str, headers: list[tuple[str, str]]
    ) -> RequestHead:
        hosts: list[str] = []
        lengths: list[str] = []
        codings: list[str] = []
        connection: list[str] = []
        expect: str | None = None
        for name, value in headers:
            if name == "host":
                hosts.append(value)
            elif name == "content-length":
                lengths.extend(v.strip() for v in value.split(","))
            elif name == "transfer-encoding":
                codings.extend(v.strip().lower() for v in value.split(","))
            elif name == "connection":
                connection.extend(v.strip().lower() for v in value.split(","))
            elif name == "expect":
                expect = value.lower()

        if version == "1.1" and len(hosts) != 1:
            raise ProtocolError("HTTP/1.1 request needs exactly one Host header")
        if len(hosts) > 1:
            raise ProtocolError("more than one Host header")
        if hosts and _TARGET_BAD.search(hosts[0]):
            raise ProtocolError("malformed Host header")

        path, query = _split_target(method, target)

        content_length: int | None = None
        chunked = False
        if codings:
            if lengths:
                raise ProtocolError("both Content-Length and Transfer-Encoding")
            if version == "1.0":
                raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
            if codings[-1] != "chunked" or codings.count("chunked") != 1:
                raise ProtocolError("Transfer-Encoding must end in a single chunked")
            if len(codings) > 1:
                raise ProtocolError(f"transfer coding {codings[0]} not implemented", status=501)
            chunked = True
        elif lengths:
            if any(not v.isdigit() or not v.isascii() for v in lengths):
                raise ProtocolError("malformed Content-Length")
            # Compared as text, length first: int() refuses strings over 4300 digits,
            # and a peer must not be able to turn a long header into a ValueError.
            values = {v.lstrip("0") or "0" for v in lengths}
            if len(values) != 1:
                raise ProtocolError("conflicting Content-Length values")
            value = values.pop()
            if len(value) > len(str(self.max_body_bytes)) or int(value) > self.max_body_bytes:
                raise ProtocolError(f"body over {self.max_body_bytes} bytes", status=413)
            content_length = int(value)

        if version == "1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection and "close" not in connection

        expect_continue = False
        if expect is not None:
            if expect != "100-continue":
                raise ProtocolError(f"cannot meet expectation {expect!r}", status=417)
            expect_continue = version == "1.1"

        return RequestHead(
            method=method,
            target=target,
            path=path,
            query=query,
            version=version,
            headers=headers,
            keep_alive=keep_alive,
            content_length=content_length,
            chunked=chunked,
            expect_continue=expect_continue,
        )

    # -- chunked body (RFC 9112 §7.1) ------------------------------------------

    def _parse_chunk_size(self) -> bytes | _Sentinel:
        buf = self._buf
        end = buf.find(b"\r\n", 0, _MAX_CHUNK_LINE)
        if end < 0:
            if len(buf) >= _MAX_CHUNK_LINE:
                raise ProtocolError("chunk size line too long")
            if b"\n" in buf or b"\r" in buf[:-1]:
                raise ProtocolError("bare CR or LF in chunk size line")
            return NEED_DATA
        line = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 2]
        size_text, semicolon, extensions = line.partition(";")
        if semicolon:
            size_text = size_text.rstrip(" \t")  # RFC 9112 §7.1.1: BWS before ";"
        if not _HEX.match(size_text) or len(size_text) > 16:
            raise ProtocolError("malformed chunk size")
        if _CTL.search(extensions) or "\r" in extensions:
            raise ProtocolError("control character in chunk extension")
        size = int(size_text, 16)
        self._body_seen += size
        if self._body_seen > self.max_body_bytes:
            raise ProtocolError(f"body over {self.max_body_bytes} bytes", status=413)
        if size == 0:
            self._state = _TRAILERS
            return self._parse_trailers()
        self._remaining = size
        self._state = _CHUNK_DATA
        return self._next_event()

    def _parse_trailers(self) -> _Sentinel:
        buf = self._buf
        if buf[:2] == b"\r\n":
            del buf[:2]
            return self._finish()
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3), self.max_header_bytes + 4)
        if end < 0:
            if len(buf) > self.max_header_bytes + 3:
                raise ProtocolError(f"trailer block over {self.max_header_bytes} bytes", status=431)
            self._scanned = len(buf)
            return NEED_DATA
        raw = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        crlf = raw.count("\r\n")
        if raw.count("\r") != crlf or raw.count("\n") != crlf:
            raise ProtocolError("bare CR or LF in trailers")
        lines = raw.split("\r\n")
        if len(lines) > self.max_header_count:
            raise ProtocolError(f"more than {self.max_header_count} trailers", status=431)
        assert self._head is not None
        self._head.trailers = [_parse_header_line(line) for line in lines]
        return self._finish()


def _parse_header_line(line: str) -> tuple[str, str]:
    if line[:1] in (" ", "\t"):
        raise ProtocolError("obsolete line folding")
    name, colon, value = line.partition(":")
    if not colon:
        raise ProtocolError("header line without a colon")
    if not _TOKEN.match(name):  # also refuses whitespace before the colon (RFC 9112 §5.1)
        raise ProtocolError("malformed header name")
    if _CTL.search(value):
        raise ProtocolError("control character in header value")
    return name.lower(), value.strip(" \t")


def _split_target(method: str, target: str) -> tuple[str, str]:
    """Origin-form, absolute-form and asterisk-form (RFC 9112 §3.2) -> (path, query)."""
    if target[0] == "/":
        path, _, query = target.partition("?")
        if "#" in target:
            raise ProtocolError("fragment in request target")
        return path, query
    if target == "*":
        if method != "OPTIONS":
            raise ProtocolError("asterisk-form target is only for OPTIONS")
        return "*", ""
    if "://" in target:
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. an unclosed "[" in the authority
            raise ProtocolError("malformed absolute-form target") from None
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ProtocolError("malformed absolute-form target")
        return parts.path or "/", parts.query
    raise ProtocolError("malformed request target")


# -- reading a chunked response body (RFC 9112 §7.1), for clients and relays ----

_MAX_CHUNK_LINE_FROM_SERVER = 1024  # a size line (hex size plus extensions) longer than this is garbage


class ChunkedDecoder:
    """Incremental decoder of a chunked body: payload bytes out, framing dropped.

    >>> d = ChunkedDecoder()
    >>> d.feed(b"5\\r\\nhel"), d.feed(b"lo\\r\\n0\\r\\n\\r\\nHTTP"), d.done, d.extra
    (b'hel', b'lo', True, b'HTTP')

    Bytes after the last chunk (a pipelined next response) are kept in ``extra``.
    Malformed framing raises ProtocolError.
    """

    __slots__ = ("_buf", "_left", "_state", "done", "extra")

    def __init__(self) -> None:
        self.done = False
        self.extra = b""
        self._buf = b""
        self._left = 0  # payload bytes still due in the current chunk
        self._state = 0  # 0 size line, 1 payload, 2 CRLF after payload, 3 trailer lines

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.extra += data
            return b""
        if self._buf:
            data, self._buf = self._buf + data, b""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == 1:
                take = min(self._left, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = 2
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > _MAX_CHUNK_LINE_FROM_SERVER:
                    raise ProtocolError("chunk framing line over 1 KiB")
                self._buf = data[pos:]
                break
            line = data[pos:eol]
            pos = eol + 2
            if self._state == 2:
                if line:
                    raise ProtocolError("chunk data longer than its size")
                self._state = 0
            elif self._state == 0:
                size_text = line.split(b";", 1)[0].strip()
                if not size_text or len(size_text) > 16 or not _HEX.match(size_text.decode("latin-1")):
                    raise ProtocolError(f"bad chunk size {line[:20]!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._state = 3
                else:
                    self._left, self._state = size, 1
            elif not line:  # state 3: the blank line after the trailers ends the body
                self.done = True
        if self.done and pos < end:
            self.extra += data[pos:]
        return out[0] if len(out) == 1 else b"".join(out)


# -- responses ----------------------------------------------------------------

REASONS: Final = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 417: "Expectation Failed", 422: "Unprocessable Content",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

_date_cache: list[object] = [0, b""]


def http_date() -> bytes:
    """The IMF-fixdate for now, recomputed at most once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode("ascii")
    return _date_cache[1]  # type: ignore[return-value]


_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}


def encode_response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Status line and header block; refuses CR/LF in names and values (response splitting)."""
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()
    parts = [line]
    for name, value in headers:
        if "\r" in value or "\n" in value or not _TOKEN.match(name):
            raise ValueError(f"invalid response header {name!r}")
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    parts.append(b"\r\n")
    return b"".join(parts)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); empty data is the last chunk."""
    if not data:
        return b"0\r\n\r\n"
    return b"%x\r\n%b\r\n" % (len(data), data)
