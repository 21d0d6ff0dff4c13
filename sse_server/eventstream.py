"""The streaming Server-Sent Events response.

    return EventStream(ticker())                                   # any async iterator
    return EventStream.subscribe(request, broker, "news")          # a channel, with resume

Headers go out at once (the connection flushes the head before ``stream`` runs),
then a ``retry:`` hint, then each event as it is produced. Heartbeat comments come
from one shared timer per distinct interval, not one per stream: every stream
records when it last wrote, and the timer writes ``:`` to those idle too long.
The connection cancels ``stream`` the moment the client leaves, which stops the
producer or leaves the channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import weakref
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any

from .app import Request, Sink, StreamingResponse
from .http11 import encode_chunk
from .sse import Event, encode_comment, encode_event, encode_retry

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["EventStream", "Heartbeats", "last_event_id_of", "SSE_HEADERS"]

log = logging.getLogger("sse_server")

SSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    # no-transform: intermediaries must not compress (and so buffer) the stream.
    ("Cache-Control", "no-cache, no-transform"),
    ("X-Accel-Buffering", "no"),  # reverse proxies that buffer by default honour this
)

_HEARTBEAT = encode_comment()
_HEARTBEAT_CHUNK = encode_chunk(_HEARTBEAT)


def last_event_id_of(request: Request) -> str | None:
    """The id a reconnecting client resumes after: the header EventSource sends, or
    ``?last_event_id=`` for clients that cannot set headers."""
    return request.headers.get("last-event-id") or request.query_param("last_event_id") or None


def _encode_item(item: Event | str | bytes | dict[str, Any]) -> bytes:
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, str):
        return encode_event(item)
    if isinstance(item, bytes):
        return item  # already an encoded event
    return encode_event(json.dumps(item, ensure_ascii=False, separators=(",", ":")))


class EventStream(StreamingResponse):
    """An SSE response fed by an async iterator or by a broker channel.

    The iterator yields ``Event``s, ``str`` (the data), ``dict`` (sent as JSON) or
    ``bytes`` already encoded with ``sse.encode_event``.
    """

    __slots__ = (
        "source", "broker", "channel", "last_event_id", "heartbeat_s", "retry_ms",
        "sink", "last_write", "reset",
    )
    media_type = SSE_HEADERS[0][1]

    def __init__(
        self,
        source: AsyncIterable[Event | str | bytes | dict[str, Any]] | None = None,
        *,
        heartbeat_s: float | None = None,
        retry_ms: int | None = None,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(None, status, [*SSE_HEADERS, *headers])
        self.source = source
        self.broker: Broker | None = None
        self.channel: str | None = None
        self.last_event_id: str | None = None
        self.heartbeat_s = heartbeat_s  # None: the server's --heartbeat
        self.retry_ms = retry_ms  # None: the server's --retry-ms
        self.sink: Sink = None  # type: ignore[assignment]
        self.last_write = 0.0
        self.reset: str | None = None

    @classmethod
    def subscribe(
        cls,
        request: Request,
        broker: Broker,
        channel: str,
        *,
        heartbeat_s: float | None = None,
        retry_ms: int | None = None,
    ) -> EventStream:
        """Stream a channel: replay after the request's last event id, then go live.

        When that id cannot be honoured, the response carries ``SSE-Reset`` and the
        stream opens with an ``event: reset`` before the history it still has.
        """
        last_id = last_event_id_of(request)
        reset = broker.check_resume(channel, last_id)
        headers = [("SSE-Reset", reset)] if reset else []
        stream = cls(None, heartbeat_s=heartbeat_s, retry_ms=retry_ms, headers=headers)
        stream.broker = broker
        stream.channel = channel
        stream.last_event_id = last_id
        return stream

    async def stream(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        config = sink.config
        self.sink = sink
        self.last_write = loop.time()
        retry_ms = config.retry_ms if self.retry_ms is None else self.retry_ms
        if retry_ms >= 0:
            sink.write(encode_retry(retry_ms))
        heartbeats = Heartbeats.for_loop(loop)
        heartbeats.add(self, config.heartbeat_s if self.heartbeat_s is None else self.heartbeat_s)
        if self.broker is not None and self.channel is not None:
            self._join_channel(self.broker, self.channel, heartbeats)
            return
        try:
            if self.source is not None:
                async for item in self.source:
                    sink.write(_encode_item(item))
                    self.last_write = loop.time()
                    await sink.drain()
        finally:
            heartbeats.remove(self)

    def _join_channel(self, broker: Broker, channel: str, heartbeats: Heartbeats) -> None:
        replay = broker.subscribe(channel, self, self.last_event_id)
        self.reset = replay.reset
        if replay.wire:
            self.sink.write_framed(replay.wire)
        if replay.closed:
            heartbeats.remove(self)
            return  # a closed channel: the history was all there is, the response ends

        def leave() -> None:
            broker.unsubscribe(channel, self)
            heartbeats.remove(self)

        # Live from here with no task of its own: the broker writes into the sink,
        # and the connection calls leave() when the client goes.
        self.sink.detach(leave)

    def end(self) -> None:
        """Finish a channel stream after what was written (Broker.close_channel)."""
        if self.sink is not None:
            self.sink.finish()

    async def on_shutdown(self, sink: Sink) -> None:
        """A last ``retry:`` spread over the jitter window, so clients do not all
        reconnect to the restarted server in the same instant."""
        config = sink.config
        base = config.retry_ms if self.retry_ms is None else self.retry_ms
        sink.write(encode_retry(max(base, 0) + random.randint(0, config.shutdown_retry_jitter_ms)))


class Heartbeats:
    """Shared heartbeat timers: one per distinct interval per event loop."""

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Heartbeats] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._groups: dict[float, dict[EventStream, None]] = {}
        self._timers: dict[float, asyncio.TimerHandle] = {}
        self._interval_of: dict[EventStream, float] = {}

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> Heartbeats:
        hb = cls._per_loop.get(loop)
        if hb is None:
            hb = cls._per_loop[loop] = cls(loop)
        return hb

    def add(self, stream: EventStream, interval_s: float) -> None:
        if interval_s <= 0:
            return  # heartbeats off for this stream
        group = self._groups.setdefault(interval_s, {})
        group[stream] = None
        self._interval_of[stream] = interval_s
        if interval_s not in self._timers:
            self._schedule(interval_s)

    def remove(self, stream: EventStream) -> None:
        interval_s = self._interval_of.pop(stream, None)
        if interval_s is not None:
            self._groups[interval_s].pop(stream, None)

    def _schedule(self, interval_s: float) -> None:
        # Checking four times per interval keeps the idle gap within 1.25 intervals.
        self._timers[interval_s] = self.loop.call_later(max(interval_s / 4, 0.01), self._tick, interval_s)

    def _tick(self, interval_s: float) -> None:
        group = self._groups.get(interval_s)
        if not group:
            self._timers.pop(interval_s, None)
            self._groups.pop(interval_s, None)
            return
        now = self.loop.time()
        for stream in group:
            if now - stream.last_write >= interval_s:
                sink = stream.sink
                if not sink.is_closing():
                    sink.write_framed(_HEARTBEAT_CHUNK if sink.chunked else _HEARTBEAT)
                stream.last_write = now
        self._schedule(interval_s)
