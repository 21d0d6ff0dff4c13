"""The in-process channel engine, the default.

A publish encodes the event once, appends it to the channel's history and hands the
same ``EncodedEvent`` to every subscriber: one buffer write each and no task
wake-up. A subscriber that reports itself over its budget is dropped on the spot
(it resumes from history with Last-Event-ID), so it never slows the loop down for
the others.

History is bounded three ways, since clients choose both event sizes and channel
names: events per channel, bytes per channel, and bytes across all channels (past
that, events go from the least recently used channels first). An event is stored
once; its cost counts the encoded bytes twice, for the framed copy a connection
caches on it. An event over ``max_event_bytes`` encoded is refused before anything
changes.

Channels are made by whoever names one. Idle ones beyond ``max_channels`` are
forgotten, least recently used first; the sequence at which that last happened is
remembered, so a client holding an older id of a channel made again gets a reset
instead of silently missing what the forgotten one had. When every channel has
subscribers the table refuses new ones (ChannelLimitError) rather than orphan one.

Idempotency keys are remembered per (channel, key) for ``idempotency_window_s``, at
most ``idempotency_keys`` of them (the oldest go first past that: a key's promise
holds for the window or until that many newer keys were used, whichever is sooner).

Everything here runs on the event loop thread; code in other threads publishes
with ``publish_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import OrderedDict, deque

from ..sse import encode_event
from .engine import (
    ChannelLimitError,
    EncodedEvent,
    Engine,
    EventTooLargeError,
    History,
    IdempotencyKeyReusedError,
    Published,
    Subscriber,
    Subscription,
    new_epoch,
    publish_fingerprint,
)

__all__ = ["IdempotencyTable", "MemoryEngine"]


_EVENT_OVERHEAD_BYTES = 200  # the EncodedEvent, its id string and its place in a deque


def event_cost(event: EncodedEvent) -> int:
    """What holding ``event`` in history costs: its bytes, the framed copy, the object."""
    return 2 * len(event.raw) + _EVENT_OVERHEAD_BYTES


class IdempotencyTable:
    """Publishes by (channel, idempotency key), each kept ``window_s``, at most ``max_keys``.

    Every entry lives equally long, so insertion order is expiry order: expired and
    over-cap entries both go from the front, in O(1) each.
    """

    def __init__(self, window_s: float, max_keys: int) -> None:
        if window_s <= 0 or max_keys < 1:
            raise ValueError("the idempotency window and the key cap must be positive")
        self.window_s = window_s
        self.max_keys = max_keys  # bounds what publishers with fresh keys can make us hold
        self._entries: OrderedDict[tuple[str, str], tuple[float, str, Published]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, channel: str, key: str, fingerprint: str, now: float) -> Published | None:
        """The earlier answer for this key, or None; IdempotencyKeyReusedError for another event."""
        self._expire(now)
        entry = self._entries.get((channel, key))
        if entry is None:
            return None
        if entry[1] != fingerprint:
            raise IdempotencyKeyReusedError(channel)
        first = entry[2]
        return Published(first.id, first.subscribers, replayed=True)  # made here: replays are the rare case

    def remember(self, channel: str, key: str, fingerprint: str, published: Published, now: float) -> None:
        self._entries[(channel, key)] = (now + self.window_s, fingerprint, published)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first[0] > now:
                return
            entries.popitem(last=False)


class _Channel:
    __slots__ = ("name", "history", "history_bytes", "subscribers", "joining", "evicted_upto", "horizon", "closed")

    def __init__(self, name: str, horizon: int) -> None:
        self.name = name
        self.history: deque[EncodedEvent] = deque()
        self.history_bytes = 0
        self.subscribers: dict[Subscriber, None] = {}  # insertion-ordered set
        self.joining: list[Subscription] = []  # reading history; live events are buffered for them
        self.evicted_upto = 0
        self.horizon = horizon
        self.closed = False

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.joining


class MemoryEngine(Engine):
    """Channels in this process: history per channel, fan-out by buffer writes."""

    def __init__(
        self,
        history_size: int = 1_000,
        max_channels: int = 10_000,
        *,
        history_bytes: int = 8 * 1024 * 1024,
        history_total_bytes: int = 128 * 1024 * 1024,
        max_event_bytes: int = 1024 * 1024,
        idempotency_window_s: float = 300.0,
        idempotency_keys: int = 100_000,
    ) -> None:
        if min(history_size, max_channels, history_bytes, history_total_bytes, max_event_bytes) < 1:
            raise ValueError("every history and channel limit must be at least 1")
        self.history_size = history_size
        self.max_channels = max_channels  # bounds what random channel names can make us hold
        self.history_bytes = history_bytes  # per channel, by event_cost
        self.history_total_bytes = history_total_bytes  # across channels: what publishers can make us hold
        self.max_event_bytes = max_event_bytes  # encoded; bounds one publish and one delivery
        self.epoch = new_epoch()
        self.published = 0
        self.delivered = 0
        self.dropped = 0  # subscribers disconnected for being over their budget
        self.stored_bytes = 0  # history of every channel, by event_cost
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._seq = 0
        self._horizon = 0  # the sequence when a channel was last forgotten
        self.idempotency = IdempotencyTable(idempotency_window_s, idempotency_keys)

    # -- channels ------------------------------------------------------------------

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is not None:
            self._channels.move_to_end(name)
            return ch
        if len(self._channels) >= self.max_channels and not self._forget_idle_channel():
            raise ChannelLimitError(self.max_channels)
        ch = self._channels[name] = _Channel(name, self._horizon)
        return ch

    def _forget_idle_channel(self) -> bool:
        for name, ch in self._channels.items():
            if ch.idle:
                self._forget(name)
                return True
        return False

    def _forget(self, name: str) -> None:
        ch = self._channels.pop(name)
        self.stored_bytes -= ch.history_bytes
        self._horizon = self._seq

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def channel_names(self) -> list[str]:
        """Least recently used first."""
        return list(self._channels)

    async def close(self) -> None:
        """Nothing to release: this engine holds no connections or timers."""

    def subscriber_count(self, channel: str) -> int:
        ch = self._channels.get(channel)
        return len(ch.subscribers) if ch is not None else 0

    def subscriber_total(self) -> int:
        return sum(len(ch.subscribers) for ch in self._channels.values())

    def subscribers(self, channel: str) -> list[Subscriber]:
        """The channel's live subscribers, in the order they joined."""
        ch = self._channels.get(channel)
        return list(ch.subscribers) if ch is not None else []

    def close_channel(self, name: str) -> int:
        """The channel has had its last event: end every stream after what it was sent.

        A subscriber arriving later gets the history after its id, then its response
        ends, instead of waiting for events that will never come (a finished
        generation). The history stays until the channel is removed. Returns how
        many streams were ended.
        """
        ch = self._channels.get(name)
        if ch is None:
            return 0
        ch.closed = True
        subscribers = list(ch.subscribers)
        ch.subscribers.clear()
        for sub in subscribers:
            sub.end()
        return len(subscribers)

    def remove_channel(self, name: str) -> None:
        """Forget a channel and its history; its live subscribers' streams end."""
        if name in self._channels:
            self.close_channel(name)
            self._forget(name)

    # -- publish -------------------------------------------------------------------

    async def publish(
        self, channel: str, data: str, event: str | None = None, *, idempotency_key: str | None = None,
    ) -> Published:
        return self.publish_nowait(channel, data, event, idempotency_key=idempotency_key)

    def publish_nowait(
        self, channel: str, data: str, event: str | None = None, *, idempotency_key: str | None = None,
    ) -> Published:
        """Publish from the loop thread without awaiting (this engine stores in memory)."""
        if idempotency_key is None:
            return self._publish(channel, data, event)
        # Check and store with no await between them: a retry cannot slip in.
        fingerprint, now = publish_fingerprint(data, event), time.monotonic()
        seen = self.idempotency.seen(channel, idempotency_key, fingerprint, now)
        if seen is not None:
            return seen
        published = self._publish(channel, data, event)
        self.idempotency.remember(channel, idempotency_key, fingerprint, published, now)
        return published

    def _publish(self, channel: str, data: str, event: str | None) -> Published:
        seq = self._seq + 1
        event_id = f"{self.epoch}-{seq}"
        raw = encode_event(data, event=event, id=event_id)  # may raise ValueError: nothing changed yet
        if len(raw) > self.max_event_bytes:
            raise EventTooLargeError(len(raw), self.max_event_bytes)
        ch = self._channel(channel)  # may raise ChannelLimitError: nothing changed yet
        self._seq = seq
        encoded = EncodedEvent(channel, seq, event_id, raw)
        self._store(ch, encoded)
        self.published += 1
        if ch.subscribers:
            self._fan_out(ch, encoded)
        for joining in ch.joining:
            if joining.buffer is not None:
                joining.buffer.append(encoded)
        return Published(event_id, len(ch.subscribers))

    def publish_threadsafe(
        self, loop: asyncio.AbstractEventLoop, channel: str, data: str, event: str | None = None, *,
        idempotency_key: str | None = None,
    ) -> concurrent.futures.Future[Published]:
        """Publish from another thread; ``.result()`` on the returned future waits for it."""
        return asyncio.run_coroutine_threadsafe(
            self.publish(channel, data, event, idempotency_key=idempotency_key), loop)

    def _store(self, ch: _Channel, event: EncodedEvent) -> None:
        cost = event_cost(event)
        ch.history.append(event)
        ch.history_bytes += cost
        self.stored_bytes += cost
        while len(ch.history) > self.history_size or ch.history_bytes > self.history_bytes:
            self._evict_oldest(ch)
        if self.stored_bytes > self.history_total_bytes:
            for other in self._channels.values():  # least recently used first
                while other.history and self.stored_bytes > self.history_total_bytes:
                    self._evict_oldest(other)
                if self.stored_bytes <= self.history_total_bytes:
                    break

    def _evict_oldest(self, ch: _Channel) -> None:
        gone = ch.history.popleft()
        cost = event_cost(gone)
        ch.history_bytes -= cost
        self.stored_bytes -= cost
        ch.evicted_upto = gone.seq

    def _fan_out(self, ch: _Channel, event: EncodedEvent) -> None:
        over = [sub for sub in ch.subscribers if not sub.deliver(event)]
        self.delivered += len(ch.subscribers) - len(over)
        for sub in over:
            ch.subscribers.pop(sub, None)
            self.dropped += 1

    # -- subscribe (the algorithm is Engine.subscribe) ------------------------------------

    def _last_seq(self) -> int:
        return self._seq

    def _join(self, sub: Subscription) -> None:
        # Joined one by one, so that making the next channel cannot forget one
        # already joined (it is no longer idle); all or nothing on a full table.
        try:
            for name in sub.channels:
                self._channel(name).joining.append(sub)
        except ChannelLimitError:
            self._leave(sub)
            raise

    def _go_live(self, sub: Subscription) -> None:
        for name in sub.channels:
            ch = self._channels[name]  # joining keeps a channel from being forgotten
            ch.joining.remove(sub)
            if ch.closed:
                continue
            ch.subscribers[sub.subscriber] = None

    def _leave(self, sub: Subscription) -> None:
        for name in sub.channels:
            ch = self._channels.get(name)
            if ch is None:
                continue
            if sub in ch.joining:
                ch.joining.remove(sub)
            ch.subscribers.pop(sub.subscriber, None)

    async def _read_history(self, channel: str, after_seq: int) -> History:
        return self.history_after(channel, after_seq)

    def history_after(self, channel: str, after_seq: int) -> History:
        ch = self._channels.get(channel)
        if ch is None:
            return History([], None, 0, self._horizon)
        events = ch.history
        if events and events[0].seq > after_seq:
            selected = list(events)
        else:
            selected = [e for e in events if e.seq > after_seq]
        oldest = events[0].id if events else None
        return History(selected, oldest, ch.evicted_upto, ch.horizon, ch.closed)
