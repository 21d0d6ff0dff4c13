"""gzip, negotiated from Accept-Encoding, that never delays a stream.

A plain response over ``compress_min_bytes`` is compressed whole. A stream gets a
``GzipFilter``: every write is compressed and sync-flushed (``Z_SYNC_FLUSH``), so
each event or HTML boundary leaves at once as a complete deflate block the
browser can inflate on arrival; nothing waits for a buffer to fill. HTML streams
are compressed by default; SSE only with ``--compress-sse`` or ``stream.compress =
True``, because a compressor is per connection: a broadcast to N subscribers costs
N compressions instead of one shared buffer write.

Every response that could have been compressed says ``Vary: Accept-Encoding``,
whether or not this client got gzip, so caches keep the two apart.
"""

from __future__ import annotations

import zlib

from ..app import AnyResponse, Handler, Request, Response, StreamingResponse, header_value
from ..config import Config

__all__ = ["Compression", "GzipFilter", "accepts_gzip"]

# Streams live long and there may be thousands: a 4 KiB window and a small hash
# table keep a compressor near 48 KiB (zlib's defaults take about 256 KiB), and
# SSE events and HTML boundaries repeat themselves within a few hundred bytes.
_STREAM_WINDOW_BITS = 12
_STREAM_MEM_LEVEL = 6
_LEVEL = 6
_GZIP = 16  # added to window bits: a gzip header and trailer instead of zlib's

_COMPRESSIBLE = ("text/", "application/json", "application/javascript", "application/xml", "image/svg+xml",
                 "application/x-ndjson")


class GzipFilter:
    """A StreamFilter: ``f(data)`` is gzip of ``data``, flushed; ``f.close()`` ends the member.

    >>> import zlib
    >>> f = GzipFilter(); d = zlib.decompressobj(31)
    >>> d.decompress(f(b"data: one\\n\\n")), d.decompress(f(b"data: two\\n\\n") + f.close())
    (b'data: one\\n\\n', b'data: two\\n\\n')
    """

    __slots__ = ("_compressor",)

    def __init__(self, level: int = _LEVEL, window_bits: int = _STREAM_WINDOW_BITS,
                 mem_level: int = _STREAM_MEM_LEVEL) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP + window_bits, mem_level)

    def __call__(self, data: bytes) -> bytes:
        c = self._compressor
        return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)

    def close(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 §12.5.3: q=0 refuses; ``*`` covers it).

    >>> accepts_gzip("gzip, deflate, br"), accepts_gzip("br;q=1, gzip;q=0"), accepts_gzip("*"), accepts_gzip(None)
    (True, False, True, False)
    """
    if not accept_encoding:
        return False
    star = False
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding == "*":
            star = q > 0
        else:
            return q > 0  # gzip named explicitly decides, whatever * says
    return star


def _compressible(content_type: str) -> bool:
    return content_type.lower().startswith(_COMPRESSIBLE)


def _add_vary(headers: list[tuple[str, str]]) -> None:
    for i, (k, v) in enumerate(headers):
        if k.lower() == "vary":
            if "accept-encoding" not in v.lower() and v.strip() != "*":
                headers[i] = (k, f"{v}, Accept-Encoding")
            return
    headers.append(("Vary", "Accept-Encoding"))


class Compression:
    """The server's compression middleware for one Config."""

    __slots__ = ("min_bytes", "compress_sse")

    def __init__(self, config: Config) -> None:
        self.min_bytes = config.compress_min_bytes
        self.compress_sse = config.compress_sse

    async def __call__(self, request: Request, call_next: Handler) -> AnyResponse:
        response = await call_next(request)
        if isinstance(response, Response):
            if len(response.body) >= self.min_bytes:  # the keep-alive GET path stops here
                self._plain(request, response)
        elif response.compress is not False:
            self._stream(request, response)
        return response

    def _eligible(self, headers: list[tuple[str, str]], status: int, any_type: bool = False) -> bool:
        if status < 200 or status in (204, 206, 304) or header_value(headers, "content-encoding") is not None:
            return False
        return any_type or _compressible(header_value(headers, "content-type") or "")

    def _plain(self, request: Request, response: Response) -> None:
        if not self._eligible(response.headers, response.status):
            return
        _add_vary(response.headers)
        if accepts_gzip(request.headers.get("accept-encoding")):
            response.body = zlib.compress(response.body, _LEVEL, wbits=_GZIP + 15)
            response.headers.append(("Content-Encoding", "gzip"))

    def _stream(self, request: Request, response: StreamingResponse) -> None:
        if response.compress is None:
            content_type = (header_value(response.headers, "content-type") or "").lower()
            if content_type.startswith("text/event-stream"):
                wanted = self.compress_sse
            else:
                wanted = response.kind == "html"
            if not wanted:
                return
        if not self._eligible(response.headers, response.status, any_type=response.compress is True):
            return
        _add_vary(response.headers)
        if accepts_gzip(request.headers.get("accept-encoding")):
            response.add_filter(GzipFilter())
            response.headers.append(("Content-Encoding", "gzip"))
