"""The streaming Server-Sent Events responses.

    return EventStream(ticker())                                        # any async iterator
    return await ChannelStream.subscribe(request, engine, ["news"])     # channels, with resume

Both share ``SSEStream``: the SSE headers go out at once (the connection flushes
the head before ``stream`` runs), then a ``retry:`` hint, then each event as it is
produced. Heartbeat comments come from one shared timer per distinct interval, not
one per stream: every stream records when it last wrote, and the timer writes
``:`` to those idle too long.

An ``EventStream`` runs its iterator in the request task, which the connection
cancels the moment the client leaves. A ``ChannelStream`` subscribes while the
handler runs, so the resume decision (and its ``SSE-Reset`` header) is made once,
before the head; then it detaches: the engine calls ``deliver`` per event, and an
idle subscriber has no task at all.

On a stream of several channels each event's id is ``<epoch>-<seq>;<channel>``:
the browser hands the whole id back as Last-Event-ID, which resumes every channel
of the stream, and a page tells the channel by the text after the first ``;``
(``event:`` stays the application's). Events are re-encoded for that shape once
per event, not once per subscriber.
"""

from __future__ import annotations

import asyncio
import json
import random
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

from ..app import Request, Sink, StreamingResponse
from ..channels import EncodedEvent, Engine, Subscription
from .codec import Event, encode_comment, encode_event, encode_retry

__all__ = [
    "SSE_HEADERS", "ChannelStream", "EventStream", "Heartbeats", "SSEStream", "come_back_later", "last_event_id_of",
]

SSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    # no-transform: intermediaries must not compress (and so buffer) the stream.
    ("Cache-Control", "no-cache, no-transform"),
    ("X-Accel-Buffering", "no"),  # reverse proxies that buffer by default honour this
)

_MAX_ECHOED_ID_CHARS = 200  # a reset notice quotes the client's id; a 60 KiB header is not echoed whole
_PENDING_BUDGET_BYTES = 1024 * 1024  # live events held between subscribe and the head going out

HEARTBEAT = EncodedEvent("", 0, "", encode_comment())  # shared by every stream: framed once


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


class SSEStream(StreamingResponse):
    """What every SSE response shares: headers, the retry hint, heartbeats, shutdown."""

    __slots__ = ("heartbeat_s", "retry_ms", "sink", "last_write", "wrote")
    media_type = SSE_HEADERS[0][1]

    def __init__(
        self,
        *,
        heartbeat_s: float | None = None,
        retry_ms: int | None = None,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(None, status, [*SSE_HEADERS, *headers])
        self.heartbeat_s = heartbeat_s  # None: the server's --heartbeat
        self.retry_ms = retry_ms  # None: the server's --retry-ms
        self.sink: Sink | None = None
        self.last_write = 0.0  # loop time of the last write, as the heartbeat timer last saw it
        self.wrote = False  # written since the heartbeat timer last looked: a flag, not a clock read per event

    def _open(self, sink: Sink) -> Heartbeats:
        """Start writing: the retry hint, and a place among the shared heartbeats."""
        loop = asyncio.get_running_loop()
        config = sink.config
        self.sink = sink
        self.last_write = loop.time()
        retry_ms = config.retry_ms if self.retry_ms is None else self.retry_ms
        if retry_ms >= 0:
            sink.write(encode_retry(retry_ms))
        heartbeats = Heartbeats.for_loop(loop)
        heartbeats.add(self, config.heartbeat_s if self.heartbeat_s is None else self.heartbeat_s)
        return heartbeats

    async def on_shutdown(self, sink: Sink) -> None:
        """A last ``retry:`` spread over the jitter window, so clients do not all
        reconnect to the restarted server in the same instant."""
        config = sink.config
        base = config.retry_ms if self.retry_ms is None else self.retry_ms
        sink.write(encode_retry(max(base, 0) + random.randint(0, config.shutdown_retry_jitter_ms)))


class EventStream(SSEStream):
    """An SSE response fed by an async iterator, run in the request's task.

    The iterator yields ``Event``s, ``str`` (the data), ``dict`` (sent as JSON) or
    ``bytes`` already encoded with ``sse.encode_event``.
    """

    __slots__ = ("source",)

    def __init__(
        self,
        source: AsyncIterable[Event | str | bytes | dict[str, Any]],
        *,
        heartbeat_s: float | None = None,
        retry_ms: int | None = None,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(heartbeat_s=heartbeat_s, retry_ms=retry_ms, status=status, headers=headers)
        self.source = source

    async def stream(self, sink: Sink) -> None:
        heartbeats = self._open(sink)
        try:
            async for item in self.source:
                sink.write(_encode_item(item))
                self.events += 1
                self.wrote = True
                await sink.drain()
        finally:
            heartbeats.remove(self)


def _tagged(event: EncodedEvent) -> EncodedEvent:
    """The event with its channel after its id (``id: <epoch>-<seq>;<channel>``), made once."""
    tagged = event.tagged
    if tagged is None:
        tagged_id = f"{event.id};{event.channel}"
        # encode_event writes the id line first: swap it, keep the rest byte for byte.
        prefix = f"id: {event.id}\n".encode()
        assert event.raw.startswith(prefix)
        raw = f"id: {tagged_id}\n".encode() + event.raw[len(prefix):]
        tagged = event.tagged = EncodedEvent(event.channel, event.seq, tagged_id, raw)
    return tagged


class ChannelStream(SSEStream):
    """A subscription to one or more channels: replay after Last-Event-ID, then live.

    Cut by the server, it ends cleanly after a jittered ``retry:``: EventSource
    reconnects and resumes from its last id either way.

    Build it with ``await ChannelStream.subscribe(...)`` in a handler. When the
    request's id cannot be honoured for a channel, the response carries
    ``SSE-Reset: <reason>`` and the stream opens with an ``event: reset`` per such
    channel (data: JSON with ``channel``, ``reason``, ``last_event_id``, ``oldest_id``)
    before the history it still has.
    """

    __slots__ = (
        "engine", "subscription", "tag_channels", "budget_bytes", "_pending", "_pending_bytes",
        "_live", "_ended", "_dropped", "_loop", "_heartbeats", "_budget",
        "__weakref__",  # the auth expiry timer holds streams weakly (middleware/auth.py)
    )
    cut_in_band = True
    kind = "channel"

    def __init__(
        self,
        engine: Engine,
        *,
        tag_channels: bool,
        heartbeat_s: float | None = None,
        retry_ms: int | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        super().__init__(heartbeat_s=heartbeat_s, retry_ms=retry_ms)
        self.engine = engine
        self.subscription: Subscription | None = None
        self.tag_channels = tag_channels
        self.budget_bytes = budget_bytes  # unsent bytes before it is dropped; None: the server's
        # Live events that arrive before the stream has caught up (the head not out yet,
        # or the replay still draining): written in order after it, within the budget.
        self._pending: deque[EncodedEvent] | None = None  # made when first needed: most never are
        self._pending_bytes = 0
        self._live = False
        self._ended = False
        self._dropped = False
        self._loop = asyncio.get_running_loop()
        self._heartbeats: Heartbeats | None = None
        self._budget = budget_bytes if budget_bytes is not None else _PENDING_BUDGET_BYTES

    @classmethod
    async def subscribe(
        cls,
        request: Request,
        engine: Engine,
        channels: Sequence[str],
        *,
        heartbeat_s: float | None = None,
        retry_ms: int | None = None,
        from_start: bool = False,
        tag_channels: bool | None = None,
        budget_bytes: int | None = None,
    ) -> ChannelStream:
        """Subscribe now, honouring the request's Last-Event-ID (``from_start``: with no
        id, replay everything the channels hold). Ids carry the channel when there is
        more than one channel, unless ``tag_channels`` says otherwise."""
        stream = cls(
            engine,
            tag_channels=len(channels) > 1 if tag_channels is None else tag_channels,
            heartbeat_s=heartbeat_s,
            retry_ms=retry_ms,
            budget_bytes=budget_bytes,
        )
        sub = await engine.subscribe(channels, stream, last_event_id_of(request), from_start=from_start)
        stream.subscription = sub
        if sub.resets:
            stream.headers.append(("SSE-Reset", sub.resets[0].reason))
        return stream

    @property
    def ended(self) -> bool:
        """Every channel has ended and there is nothing to replay: a client that
        reconnects is done (answer 204, which stops EventSource reconnecting)."""
        sub = self.subscription
        return sub is not None and sub.closed and not sub.replay and not self._pending

    def close(self) -> None:
        """Give up the subscription without streaming it (the handler answers otherwise)."""
        self._leave()

    # -- the engine's side -----------------------------------------------------------

    def deliver(self, event: EncodedEvent) -> bool:
        if not self._live:  # still catching up: queue it behind the replay, within the budget
            if self._pending is None:
                self._pending = deque()
            self._pending.append(event)
            self._pending_bytes += len(event.raw)
            if self._pending_bytes > self._budget:
                self._dropped = True
                return False
            return True
        sink = self.sink
        assert sink is not None
        unsent = sink.deliver(_tagged(event) if self.tag_channels else event)
        if unsent < 0:
            return True  # the connection is ending; its close hook unsubscribes us
        self.events += 1
        self.wrote = True
        if unsent - len(event.raw) > self._budget:
            # Too far behind to catch up live: drop it now; it resumes from history.
            # The event just written does not count, so one as large as the budget
            # never costs a subscriber that is keeping up its connection.
            sink.abort()
            return False
        return True

    def end(self) -> None:
        """The channel had its last event: finish after what was written."""
        self._ended = True
        if self._live and self.sink is not None:
            self.sink.finish()

    # -- the connection's side ----------------------------------------------------------

    async def stream(self, sink: Sink) -> None:
        sub = self.subscription
        assert sub is not None, "build a ChannelStream with ChannelStream.subscribe"
        if self.budget_bytes is None:
            self._budget = sink.config.max_subscriber_buffer_bytes
        self._heartbeats = self._open(sink)
        try:
            await self._catch_up(sink, sub)
        except BaseException:
            self._leave()  # the client left (or the server stops) while catching up
            raise
        if sub.closed or self._ended:
            self._leave()
            return  # every channel has ended: the history was all there is
        # Live from here with no task of its own: the engine delivers into the sink,
        # and the connection calls _leave when the client goes.
        sink.detach(self._leave)

    async def _catch_up(self, sink: Sink, sub: Subscription) -> None:
        """Write the resets, the replay, then what arrived meanwhile, as the socket drains:
        a resuming client that does not read pins its socket buffers, not its backlog."""
        for reset in sub.resets:
            payload = {"channel": reset.channel, "reason": reset.reason,
                       "last_event_id": reset.last_event_id[:_MAX_ECHOED_ID_CHARS], "oldest_id": reset.oldest_id}
            sink.write(encode_event(json.dumps(payload), event="reset"))
        tag = self.tag_channels
        replay, sub.replay = sub.replay, ()
        for event in replay:
            sink.deliver(_tagged(event) if tag else event)
            self.events += 1
            await sink.drain()
        while self._pending:
            if self._dropped:
                raise ConnectionAbortedError("fell behind its budget while catching up")
            event = self._pending.popleft()
            self._pending_bytes -= len(event.raw)
            sink.deliver(_tagged(event) if tag else event)
            self.events += 1
            await sink.drain()
        self._pending = None
        self.wrote = True
        self._live = True  # no await since the queue was seen empty: nothing is skipped

    def _leave(self) -> None:
        # Dropping the references both ways frees the stream, its subscription and its
        # exchange by reference counting the moment the client goes, not at the next
        # cycle collection: a churn of subscribers leaves no garbage behind.
        sub, self.subscription = self.subscription, None
        if sub is not None:
            self.engine.unsubscribe(sub)
        if self._heartbeats is not None:
            self._heartbeats.remove(self)
            self._heartbeats = None
        self.sink = None


async def _one(item: bytes) -> AsyncIterator[bytes]:
    yield item


def come_back_later(reason: str, retry_ms: int = 1_000) -> EventStream:
    """An SSE subscription that cannot be served now (its engine is unreachable),
    answered so that browsers recover.

    A 503 would fail an EventSource for good: any status but 200 (or a type other
    than text/event-stream) "fails the connection" and it never reconnects (WHATWG
    HTML §9.2). So the answer is a 200 event stream holding only a ``retry:`` hint
    (``retry_ms`` plus up to as much again, so an outage's clients do not all come
    back in one instant) and a comment naming the cause, and it ends at once:
    EventSource reconnects after the hint with the same Last-Event-ID and resumes
    from history once the engine answers. Chosen over a stream held open until the
    engine is back: a node holds nothing per waiting client, the reconnect may
    reach a node that can serve it, and a stream that looked live would hide the
    outage from the page.
    """
    note = encode_comment(f"unavailable: {reason}; reconnect after the retry hint")
    return EventStream(_one(note), retry_ms=retry_ms + random.randint(0, retry_ms))


class Heartbeats:
    """Shared heartbeat timers: one per distinct interval per event loop."""

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Heartbeats] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent = 0  # heartbeats written, for metrics
        self._groups: dict[float, dict[SSEStream, None]] = {}
        self._timers: dict[float, asyncio.TimerHandle] = {}
        self._interval_of: dict[SSEStream, float] = {}

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> Heartbeats:
        hb = cls._per_loop.get(loop)
        if hb is None:
            hb = cls._per_loop[loop] = cls(loop)
        return hb

    def add(self, stream: SSEStream, interval_s: float) -> None:
        if interval_s <= 0:
            return  # heartbeats off for this stream
        group = self._groups.setdefault(interval_s, {})
        group[stream] = None
        self._interval_of[stream] = interval_s
        if interval_s not in self._timers:
            self._schedule(interval_s)

    def remove(self, stream: SSEStream) -> None:
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
            if stream.wrote:  # streams mark writes with a flag; the clock is read here, once per tick
                stream.wrote = False
                stream.last_write = now
            elif now - stream.last_write >= interval_s:
                sink = stream.sink
                if sink is not None and sink.deliver(HEARTBEAT) >= 0:  # -1: a closing connection
                    self.sent += 1
                stream.last_write = now
        self._schedule(interval_s)
