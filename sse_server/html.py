"""Serve html_stream pages: the shell at once, each boundary as it completes.

    @app.route("/orders")
    async def orders(request: Request):
        return await stream_page(request, orders_page(), csp=True)

The strategy follows the request unless given: crawlers and HTTP/1.0 clients get
the whole page with ``Content-Length`` (never a fallback), browsers get it
streamed. The shell is rendered before the status line goes out, so an error in
it is a real 500; a client that leaves cancels every pending boundary.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from html_stream import choose_strategy, render

from .app import HTMLResponse, Request, Sink, StreamingResponse

__all__ = ["HTMLStream", "stream_page"]

_STREAM_HEADERS = (
    # no-transform: an intermediary that compresses would buffer the boundaries.
    ("Cache-Control", "no-cache, no-transform"),
    ("X-Accel-Buffering", "no"),
)


class HTMLStream(StreamingResponse):
    """A rendered page whose first chunk (the shell) is already in hand."""

    __slots__ = ("first", "chunks")
    media_type = "text/html; charset=utf-8"
    kind = "html"

    def __init__(
        self, first: bytes, chunks: AsyncGenerator[bytes, None], headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(None, 200, [*_STREAM_HEADERS, *headers])
        self.first = first
        self.chunks = chunks

    async def stream(self, sink: Sink) -> None:
        async with contextlib.aclosing(self.chunks) as chunks:  # cancels pending boundaries on exit
            sink.write(self.first)
            await sink.drain()
            async for chunk in chunks:
                sink.write(chunk)
                self.events += 1  # a boundary
                await sink.drain()


def _csp(nonce: str) -> str:
    src = f"'nonce-{nonce}'"
    return f"default-src 'self'; script-src {src}; style-src {src}; object-src 'none'; base-uri 'none'"


async def stream_page(
    request: Request,
    page: Any,
    *,
    strategy: str | None = None,
    nonce: str | None = None,
    csp: bool = False,
    deadline_s: float | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> HTMLResponse | HTMLStream:
    """Render ``page`` for this request; ``csp=True`` makes a nonce and sends a strict policy."""
    extra = list(headers)
    if csp:
        nonce = nonce or secrets.token_urlsafe(16)
        extra.append(("Content-Security-Policy", _csp(nonce)))
    if strategy is None:
        strategy = choose_strategy(request.headers.get("user-agent"), request.http_version)
    chunks = render(page, strategy=strategy, nonce=nonce, deadline_s=deadline_s)
    try:
        first = await anext(chunks)  # the shell: its errors propagate, before any byte
        if strategy != "buffer":
            return HTMLStream(first, chunks, extra)
        rest = [chunk async for chunk in chunks]
    finally:
        if strategy == "buffer":
            await chunks.aclose()
    return HTMLResponse(first + b"".join(rest), headers=extra)
