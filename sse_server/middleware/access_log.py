"""One access line per request, written when its response has ended (streams too).

    127.0.0.1 - "GET /channels/news/events HTTP/1.1" 200 5120B 60012.3ms

A stream's line comes when the stream ends, with the bytes it sent and how long
it lived. Status ``-`` means no response went out (the client left first). A token
in the query (``?access_token=``, for EventSource) is printed as ``REDACTED``.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

from ..app import AnyResponse, Handler, Outcome, Request

__all__ = ["access_log", "redact_target"]

log = logging.getLogger("sse_server.access")


async def access_log(request: Request, call_next: Handler) -> AnyResponse:
    if log.isEnabledFor(logging.INFO):
        request.on_finish(lambda outcome: _write_line(request, outcome))
    return await call_next(request)


def _write_line(request: Request, outcome: Outcome) -> None:
    log.info(
        '%s - "%s %s HTTP/%s" %s %dB %.1fms',
        request.client[0] if request.client else "-",
        request.method, redact_target(request.target), request.http_version,
        outcome.status or "-", outcome.body_bytes, outcome.duration_s * 1000,
    )


_SECRET_PARAMS = frozenset({"access_token"})


def redact_target(target: str) -> str:
    """The request target with each secret query value replaced: a log line is read by
    more people than the token's owner. Names are compared decoded, as the app reads them.

    >>> redact_target("/events?channel=a&access_token=eyJ.x.y")
    '/events?channel=a&access_token=REDACTED'
    """
    path, sep, query = target.partition("?")
    if not sep or "access" not in unquote_plus(query):
        return target
    pairs = query.split("&")
    for i, pair in enumerate(pairs):
        name, eq, _ = pair.partition("=")
        if eq and unquote_plus(name) in _SECRET_PARAMS:
            pairs[i] = f"{name}=REDACTED"
    return f"{path}?{'&'.join(pairs)}"
