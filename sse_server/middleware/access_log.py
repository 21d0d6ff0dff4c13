"""One access line per request, written when its response has ended (streams too).

    text: 2026-01-02 10:00:00,123 INFO sse_server.access: 127.0.0.1 - "GET /channels/news/events HTTP/1.1"
          200 5120B 60012.3ms   (one line)
    json: {"time":"2026-01-02T10:00:00.123Z","client":"127.0.0.1","method":"GET","path":"/channels/news/events",
           "http":"1.1","status":200,"bytes":5120,"duration_ms":60012.3,"stream":true,"events":41,"completed":false}

A stream's line comes when the stream ends, with the bytes it sent, how long it
lived and how many events it carried. Status ``-`` (JSON: 0) means no response
went out (the client left first). Secrets in query strings (``access_token=``,
``api_key=``, ...) are logged as ``REDACTED``.

Cheap by construction, since it runs on every request. It is not a middleware
(a layer would cost a coroutine and an ``on_finish`` registration per request):
the server calls ``AccessLog.record`` with the ``Outcome`` it builds anyway for
its metrics, and that appends a tuple to a list. Formatting and writing happen in
batches, when a short timer fires, when the batch is large, and at shutdown. The
logging module is not called per request; lines go straight to the stream (stderr).

Formatting is most of the log's cost (a line took 15-21k instructions, a whole
keep-alive request 190k), so a batch reuses what repeats from line to line: the
timestamp within a millisecond, the part naming the client and the request (per
connection and target), and the status, bytes and duration part. Each cache is
a dict cleared when it grows past a bound, so a varied load costs a lookup more,
never memory without bound.

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

from ..app import Outcome

__all__ = ["AccessLog", "redact_target", "SECRET_PARAMS"]

# Query parameters whose values never reach a log line (tokens browsers must put
# in URLs: EventSource cannot send an Authorization header).
SECRET_PARAMS = frozenset({
    "access_token", "token", "api_key", "apikey", "key", "password", "secret", "jwt", "auth", "signature", "sig",
})
_FLUSH_AFTER_S = 0.25  # a line is on disk within this long
_FLUSH_AT_LINES = 1024  # or once this many wait: bounds what a burst holds in memory
_CACHE_ENTRIES = 512  # per formatting cache, checked once a batch (so at most this + one batch)
_CACHED_TARGET_CHARS = 256  # longer targets are formatted each time: a cache entry holds its key

_Record = tuple[float, Outcome]  # when it ended; the Outcome carries what the line shows of the request
_Request = tuple[str, str, str, "tuple[str, int] | None"]  # Outcome[6:]: method, target, version, client


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


_MILLIS = tuple(f"{ms:03d}" for ms in range(1000))


class _Text:
    """The text line in parts: ``{stamp}{request}{result}``, each rendered only when not cached."""

    units_per_s = 10_000  # durations are cached in tenths of a millisecond, as the line shows them

    @staticmethod
    def second(second: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S,", time.localtime(second))

    @staticmethod
    def stamp(second: str, milli: str) -> str:
        return f"{second}{milli}"

    @staticmethod
    def request(method: str, target: str, version: str, peer: tuple[str, int] | None) -> str:
        client = peer[0] if peer else "-"
        return f' INFO sse_server.access: {client} - "{method} {redact_target(target)} HTTP/{version}" '

    @staticmethod
    def result(outcome: Outcome, units: int) -> str:
        return f"{outcome.status or '-'} {outcome.body_bytes}B {units / 10:.1f}ms\n"

    cached_stream_result = True  # a stream's text line is a request's


class _Json:
    """The JSON object in the same parts; the stamp opens the object, the result closes it."""

    units_per_s = 1_000_000  # "duration_ms" to the microsecond

    @staticmethod
    def second(second: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))

    @staticmethod
    def stamp(second: str, milli: str) -> str:
        return f'{{"time":"{second}{milli}Z"'

    @staticmethod
    def request(method: str, target: str, version: str, peer: tuple[str, int] | None) -> str:
        client = _json_string(peer[0]) if peer else "null"
        return (f',"client":{client},"method":{_json_string(method)},'
                f'"path":{_json_string(redact_target(target))},"http":"{version}",')

    @staticmethod
    def result(outcome: Outcome, units: int) -> str:
        result = f'"status":{outcome.status},"bytes":{outcome.body_bytes},"duration_ms":{units / 1000}'
        if outcome.streamed:
            completed = "true" if outcome.completed else "false"
            return f'{result},"stream":true,"events":{outcome.events},"completed":{completed}}}\n'
        return f"{result}}}\n"

    cached_stream_result = False  # a stream's object has its own events and completion


class AccessLog:
    """The server's access log: ``record`` is its finish hook, ``flush`` its batched writer."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"access log format is text or json, not {fmt!r}")
        self.format = fmt
        self.stream = stream  # None: sys.stderr as it is when a batch is written
        self.flush_after_s = _FLUSH_AFTER_S
        self._pending: list[_Record] = []
        self._timer: asyncio.TimerHandle | None = None
        self._parts: type[_Text | _Json] = _Json if fmt == "json" else _Text
        # The last timestamp and the millisecond it covers, [from, to) in time.time() seconds.
        self._stamp = ""
        self._stamp_from = self._stamp_to = 0.0
        self._second = -1
        self._second_text = ""
        self._requests: dict[_Request, str] = {}  # Outcome[6:] -> the line's part naming the request
        self._results: dict[tuple[int, int, int], str] = {}  # (status, bytes, duration units) -> its part

    def record(self, outcome: Outcome) -> None:
        """Keep ``outcome`` for the next batch (the server calls this as each response ends)."""
        pending = self._pending
        pending.append((time.time(), outcome))
        if self._timer is None or len(pending) >= _FLUSH_AT_LINES:
            self._schedule()

    def _schedule(self) -> None:
        if len(self._pending) >= _FLUSH_AT_LINES:
            self.flush()
            return
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
        for cache in (self._requests, self._results):
            if len(cache) > _CACHE_ENTRIES:
                cache.clear()
        text = self._lines(pending)
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or full: the log is best effort
            pass

    def _lines(self, pending: list[_Record]) -> str:
        # Written out, not split into calls: this loop runs once per line.
        parts = self._parts
        units_per_s = parts.units_per_s
        cached_stream_result = parts.cached_stream_result
        requests, results = self._requests, self._results
        stamp, stamp_from, stamp_to = self._stamp, self._stamp_from, self._stamp_to
        lines = []
        for t, outcome in pending:
            if not stamp_from <= t < stamp_to:
                ms = int(t * 1000)
                second = ms // 1000
                if second != self._second:
                    self._second, self._second_text = second, parts.second(second)
                stamp = parts.stamp(self._second_text, _MILLIS[ms - second * 1000])
                stamp_from, stamp_to = ms / 1000, (ms + 1) / 1000
            key = outcome[6:]
            request = requests.get(key)
            if request is None:
                request = parts.request(*key)
                if len(key[1]) <= _CACHED_TARGET_CHARS:
                    requests[key] = request
            units = round(outcome[2] * units_per_s)
            if outcome[3] and not cached_stream_result:
                result = parts.result(outcome, units)
            else:
                result_key = (outcome[0], outcome[1], units)
                cached = results.get(result_key)
                if cached is None:
                    cached = results[result_key] = parts.result(outcome, units)
                result = cached
            lines.append(f"{stamp}{request}{result}")
        self._stamp, self._stamp_from, self._stamp_to = stamp, stamp_from, stamp_to
        return "".join(lines)
