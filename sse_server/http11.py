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

Chunked bodies are decoded by one ``ChunkedDecoder``, for requests here and for
responses read by the relay and the load tests, so both directions apply the
same rules and differ only in their limits.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
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
_MAX_CHUNK_LINE = 4096  # size line incl. extensions and CRLF; bounds what a chunk header may buffer
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

    @property
    def has_body(self) -> bool:
        """Whether body events and END_OF_MESSAGE follow this head."""
        return self.chunked or bool(self.content_length)


# Parser states.
_HEAD, _BODY, _CHUNKED, _ERROR = range(4)


class RequestParser:
    """Incremental HTTP/1.1 request parser for one connection."""

    __slots__ = (
        "_buf", "_state", "_remaining", "_chunked", "_scanned", "_blank_lines",
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
        self._chunked: ChunkedDecoder | None = None  # the body decoder while in _CHUNKED
        # Bytes of an incomplete head already checked: each feed scans only what is
        # new, so a head dripped a byte at a time costs linear, not quadratic, work.
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
        if state == _CHUNKED:
            assert self._chunked is not None
            # The decoder takes framing from the front of our buffer and leaves what
            # follows the body there: it is the next pipelined request.
            event = self._chunked.next_event(self._buf)
            return self._finish() if event is END_OF_MESSAGE else event
        raise ProtocolError("connection is unusable after a framing error")

    def _finish(self) -> _Sentinel:
        self._state = _HEAD
        self._chunked = None
        self._scanned = 0
        return END_OF_MESSAGE

    # -- head ---------------------------------------------------------------

    def _parse_head(self) -> RequestHead | _Sentinel:
        buf = self._buf
        if not buf:  # the usual case after a keep-alive request: nothing to scan or check
            self._scanned = 0
            return NEED_DATA
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
        if head.chunked:
            self._state = _CHUNKED
            # Trailers are a header block after the body and get the head's limits.
            self._chunked = ChunkedDecoder(
                max_body_bytes=self.max_body_bytes,
                max_size_line_bytes=_MAX_CHUNK_LINE,
                max_trailer_bytes=self.max_header_bytes,
                max_trailer_count=self.max_header_count,
            )
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


def _parse_header_line(line: str) -> tuple[str, str]:
    name, value = _split_field_line(line)
    return name.lower(), value.strip(" \t")


def _split_field_line(line: str) -> tuple[str, str]:
    """A header or trailer line as (name, raw value), refusing what RFC 9112 §5 does not allow."""
    if line[:1] in (" ", "\t"):
        raise ProtocolError("obsolete line folding")
    name, colon, value = line.partition(":")
    if not colon:
        raise ProtocolError("header line without a colon")
    if not _TOKEN.match(name):  # also refuses whitespace before the colon (RFC 9112 §5.1)
        raise ProtocolError("malformed header name")
    if _CTL.search(value):
        raise ProtocolError("control character in header value")
    return name, value


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


# -- chunked bodies (RFC 9112 §7.1), in requests and in responses ---------------------

# Decoder states.
_SIZE_LINE, _DATA, _DATA_CRLF, _TRAILERS, _DONE, _BROKEN = range(6)


class ChunkedDecoder:
    """Incremental decoder of one chunked body: payload bytes out, framing checked and dropped.

    >>> d = ChunkedDecoder()
    >>> d.feed(b"5\\r\\nhel"), d.feed(b"lo\\r\\n0\\r\\n\\r\\nHTTP"), d.done, d.extra
    (b'hel', b'lo', True, b'HTTP')

    One set of rules whoever sent the body: a lax reader and a strict one disagree
    about where a body ends, which is how smuggling starts (RFC 9112 §11.2). Only the
    limits differ and are given here: payload bytes in all (413; None for a stream
    that may run forever), the size line with its extensions and CRLF (400), and the
    trailer block's bytes and lines (431). Malformed framing raises ProtocolError and
    leaves the decoder refusing everything after.

    ``feed()`` keeps its own buffer and puts bytes after the last chunk (a pipelined
    next message) in ``extra``. RequestParser calls ``next_event()`` on its own buffer
    instead, so those bytes stay there for the next request. With ``keep_chunks``
    each chunk's payload is appended to ``chunks`` once its closing CRLF has arrived.
    """

    __slots__ = (
        "_buf", "_left", "_parts", "_scanned", "_seen", "_state", "chunks", "extra",
        "max_body_bytes", "max_size_line_bytes", "max_trailer_bytes", "max_trailer_count",
    )

    def __init__(
        self,
        max_body_bytes: int | None = None,
        max_size_line_bytes: int = 1024,
        max_trailer_bytes: int = 64 * 1024,
        max_trailer_count: int = 100,
        *,
        keep_chunks: bool = False,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_size_line_bytes = max_size_line_bytes
        self.max_trailer_bytes = max_trailer_bytes
        self.max_trailer_count = max_trailer_count
        self.chunks: list[bytes] | None = [] if keep_chunks else None
        self.extra = b""
        self._buf = bytearray()  # feed() only; next_event() works on the caller's buffer
        self._state = _SIZE_LINE
        self._left = 0  # payload bytes still due in the current chunk
        self._seen = 0  # payload bytes announced so far, for max_body_bytes
        # Bytes of an incomplete size line or trailer block already checked: each call
        # scans only what is new, so a body dripped a byte at a time costs linear work.
        self._scanned = 0
        self._parts: list[bytes] = []  # the current chunk's payload, when keep_chunks

    @property
    def done(self) -> bool:
        """Whether the last chunk and the trailer block have been read."""
        return self._state == _DONE

    @property
    def safe_feed_bytes(self) -> int:
        """How many bytes feed() can take now without passing the body's end: the rest of
        the chunk and its CRLF, else 1 (where a size or trailer line ends is not known)."""
        if self._state == _DATA:
            return self._left + 2
        if self._state == _DATA_CRLF:
            return 2 - len(self._buf)
        return 0 if self._state == _DONE else 1

    def feed(self, data: bytes) -> bytes:
        """The payload that data completes (b"" while only framing arrived)."""
        if self._state == _DONE:
            self.extra += data
            return b""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            event = self.next_event(buf)
            if isinstance(event, bytes):
                out.append(event)
                continue
            if event is END_OF_MESSAGE:
                self.extra = bytes(buf)
                buf.clear()
            return out[0] if len(out) == 1 else b"".join(out)

    def next_event(self, buf: bytearray) -> bytes | _Sentinel:
        """Take framing and the next payload piece from the front of buf.

        Returns payload bytes (never empty), NEED_DATA, or END_OF_MESSAGE once the
        trailer block has ended; whatever follows the body is left in buf.
        """
        try:
            return self._next_event(buf)
        except ProtocolError:
            self._state = _BROKEN
            raise

    def _next_event(self, buf: bytearray) -> bytes | _Sentinel:
        while True:
            state = self._state
            if state == _DATA:
                if not buf:
                    return NEED_DATA
                piece = bytes(buf[: self._left])
                del buf[: len(piece)]
                self._left -= len(piece)
                if self._left == 0:
                    self._state = _DATA_CRLF
                if self.chunks is not None:
                    self._parts.append(piece)
                return piece
            if state == _SIZE_LINE:
                line = self._take_size_line(buf)
                if line is None:
                    return NEED_DATA
                self._start_chunk(line)
            elif state == _DATA_CRLF:
                if buf[:2] != b"\r\n":
                    if not buf or buf == b"\r":  # the CRLF is on its way
                        return NEED_DATA
                    raise ProtocolError("chunk data not followed by CRLF")
                del buf[:2]
                self._state = _SIZE_LINE
                if self.chunks is not None:
                    self.chunks.append(b"".join(self._parts))
                    self._parts.clear()
            elif state == _TRAILERS:
                if not self._take_trailers(buf):
                    return NEED_DATA
                self._state = _DONE
                return END_OF_MESSAGE
            elif state == _DONE:
                return END_OF_MESSAGE
            else:
                raise ProtocolError("chunked body is unusable after a framing error")

    def _take_size_line(self, buf: bytearray) -> str | None:
        limit = self.max_size_line_bytes
        # A CR that ended the last call may have been waiting for its LF: look from one before.
        pair_from = max(0, self._scanned - 1)
        end = buf.find(b"\r\n", pair_from, limit)
        if end < 0:
            if len(buf) >= limit:
                raise ProtocolError(f"chunk size line over {limit} bytes")
            # Fail now rather than at the limit: no CRLF yet, so any LF, or a CR with a
            # byte after it, is bare (RFC 9112 §2.2).
            if buf.find(b"\n", self._scanned) >= 0 or buf.find(b"\r", pair_from, len(buf) - 1) >= 0:
                raise ProtocolError("bare CR or LF in chunk size line")
            self._scanned = len(buf)
            return None
        line = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 2]
        self._scanned = 0
        return line

    def _start_chunk(self, line: str) -> None:
        size_text, semicolon, extensions = line.partition(";")
        if semicolon:
            size_text = size_text.rstrip(" \t")  # RFC 9112 §7.1.1: BWS before ";"
            # Extensions are ignored (RFC 9112 §7.1.1) but must not smuggle line ends or controls.
            if _CTL.search(extensions) or "\r" in extensions:
                raise ProtocolError("control character in chunk extension")
        if not _HEX.match(size_text) or len(size_text) > 16:
            raise ProtocolError("malformed chunk size")
        size = int(size_text, 16)
        self._seen += size
        # Checked on the size line, before the payload: a peer cannot make us take it in.
        if self.max_body_bytes is not None and self._seen > self.max_body_bytes:
            raise ProtocolError(f"body over {self.max_body_bytes} bytes", status=413)
        if size:
            self._left = size
            self._state = _DATA
        else:
            self._state = _TRAILERS

    def _take_trailers(self, buf: bytearray) -> bool:
        """Check the trailer block after the last chunk and drop it; False until it is whole.

        RFC 9112 §7.1.2 lets a recipient discard trailers, and nothing here reads them,
        so none are kept; they must still be well formed, as a header block would be.
        """
        if buf[:2] == b"\r\n":  # no trailers: the usual case
            del buf[:2]
            return True
        limit = self.max_trailer_bytes
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3), limit + 4)
        if end < 0:
            if len(buf) > limit + 3:  # + 3: the blank line may be arriving
                raise ProtocolError(f"trailer block over {limit} bytes", status=431)
            self._scanned = len(buf)
            return False
        block = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        self._scanned = 0
        crlf = block.count("\r\n")
        if block.count("\r") != crlf or block.count("\n") != crlf:
            raise ProtocolError("bare CR or LF in trailers")
        if crlf + 1 > self.max_trailer_count:
            raise ProtocolError(f"more than {self.max_trailer_count} trailers", status=431)
        for line in block.split("\r\n"):
            _split_field_line(line)
        return True


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
