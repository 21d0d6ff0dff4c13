"""One access line per request, written when its response has ended (streams too).

    127.0.0.1 - "GET /channels/news/events HTTP/1.1" 200 5120B 60012.3ms

A stream's line comes when the stream ends, with the bytes it sent and how long
it lived. Status ``-`` means no response went out (the client left first).
"""

from __future__ import annotations

import logging

from ..app import AnyResponse, Handler, Outcome, Request

__all__ = ["access_log"]

log = logging.getLogger("sse_server.access")


async def access_log(request: Request, call_next: Handler) -> AnyResponse:
    if log.isEnabledFor(logging.INFO):
        request.on_finish(lambda outcome: _write_line(request, outcome))
    return await call_next(request)


def _write_line(request: Request, outcome: Outcome) -> None:
    log.info(
        '%s - "%s %s HTTP/%s" %s %dB %.1fms',
        request.client[0] if request.client else "-",
        request.method, request.target, request.http_version,
        outcome.status or "-", outcome.body_bytes, outcome.duration_s * 1000,
    )
