"""One access line per request, written when its response has ended (streams too).

    text: 2026-01-02 10:00:00,123 INFO sse_server.access: 127.0.0.1 - "GET /channels/news/events HTTP/1.1"
          200 5120B 60012.3ms   (one line)
    json: {"time":"2026-01-02T10:00:00.123Z","client":"127.0.0.1","method":"GET","path":"/channels/news/events",
           "http":"1.1","status":200,"bytes":5120,"duration_ms":60012.3,"stream":true,"events":41,"completed":false}

A stream's line comes when the stream ends, with the bytes it sent, how long it
lived and how many events it carried. Status ``-`` (JSON: 0) means no response
went out (the client left first). Secrets in query strings (``access_token=``,
``api_key=``, ...) are logged as ``REDACTED``.

Cheap by construction, since it runs on every request: the request's end appends
a tuple to a list; formatting and writing happen in batches, off the request path,
when a short timer fires, when the batch is large, and at shutdown. The logging
module is not called per request; lines go straight to the stream (stderr).
Whether the log is on follows the ``sse_server.access`` logger's level when the
server starts (``--log-level info`` or lower).
"""

from __future__ import annotations

import asyncio
import sys
import time
from json.encoder import encode_basestring_ascii as _json_string
from typing import TextIO
from urllib.parse import unquote_plus

from ..app import AnyResponse, Handler, Outcome, Request

__all__ = ["AccessLog", "redact_target", "SECRET_PARAMS"]

# Query parameters whose values never reach a log line (tokens browsers must put
# in URLs: EventSource cannot send an Authorization header).
SECRET_PARAMS = frozenset({
    "access_token", "token", "api_key", "apikey", "key", "password", "secret", "jwt", "auth", "signature", "sig",
})
_FLUSH_AFTER_S = 0.25  # a line is on disk within this long
_FLUSH_AT_LINES = 1024  # or once this many wait: bounds what a burst holds in memory

_Record = tuple[float, Outcome]  # when it ended; the Outcome carries what the line shows of the request


def _param_name(raw: str) -> str:
    """A query parameter's name as the app reads it: ``access%5Ftoken`` is ``access_token``."""
    return (unquote_plus(raw) if "%" in raw or "+" in raw else raw).lower()


def redact_target(target: str) -> str:
    """The request target with secret query values replaced.

    >>> redact_target("/events?channel=a&access_token=abc.def&x=1")
    '/events?channel=a&access_token=REDACTED&x=1'
    """
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if eq and _param_name(name) in SECRET_PARAMS:
            parts[i] = f"{name}=REDACTED"
            changed = True
    return f"{path}?{'&'.join(parts)}" if changed else target


class _Clock:
    """Timestamps formatted once per second, not once per line."""

    __slots__ = ("_second", "_text", "_iso")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""
        self._iso = ""

    def _at(self, t: float) -> None:
        second = int(t)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))

    def text(self, t: float) -> str:
        self._at(t)
        return f"{self._text},{int(t * 1000) % 1000:03d}"

    def iso(self, t: float) -> str:
        self._at(t)
        return f"{self._iso}.{int(t * 1000) % 1000:03d}Z"


class AccessLog:
    """The server's access-log middleware and its batched writer."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"access log format is text or json, not {fmt!r}")
        self.format = fmt
        self.stream = stream  # None: sys.stderr as it is when a batch is written
        self.flush_after_s = _FLUSH_AFTER_S
        self._pending: list[_Record] = []
        self._timer: asyncio.TimerHandle | None = None
        self._recorder = self._record
        self._clock = _Clock()

    async def __call__(self, request: Request, call_next: Handler) -> AnyResponse:
        request.on_finish(self._recorder)  # bound once: nothing made per request but the Outcome
        return await call_next(request)

    def _record(self, outcome: Outcome) -> None:
        pending = self._pending
        pending.append((time.time(), outcome))
        if len(pending) >= _FLUSH_AT_LINES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.flush_after_s, self.flush)
            except RuntimeError:  # no loop (a callback run outside the server): write now
                self.flush()

    def flush(self) -> None:
        """Write every pending line now (the timer, a full batch, shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        line = self._json_line if self.format == "json" else self._text_line
        text = "".join([line(*record) for record in pending])
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or full: the log is best effort
            pass

    def _text_line(self, t: float, outcome: Outcome) -> str:
        peer, method, target, version = outcome.client, outcome.method, outcome.target, outcome.http_version
        client = peer[0] if peer else "-"
        return (
            f'{self._clock.text(t)} INFO sse_server.access: {client} - "{method} '
            f'{redact_target(target)} HTTP/{version}" {outcome.status or "-"} '
            f"{outcome.body_bytes}B {outcome.duration_s * 1000:.1f}ms\n"
        )

    def _json_line(self, t: float, outcome: Outcome) -> str:
        peer, method, target, version = outcome.client, outcome.method, outcome.target, outcome.http_version
        client = _json_string(peer[0]) if peer else "null"
        stream = (
            f',"stream":true,"events":{outcome.events},"completed":{"true" if outcome.completed else "false"}'
            if outcome.streamed else ""
        )
        return (
            f'{{"time":"{self._clock.iso(t)}","client":{client},"method":{_json_string(method)},'
            f'"path":{_json_string(redact_target(target))},"http":"{version}",'
            f'"status":{outcome.status},"bytes":{outcome.body_bytes},'
            f'"duration_ms":{round(outcome.duration_s * 1000, 3)}{stream}}}\n'
        )
