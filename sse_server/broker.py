"""Broadcast channels: event ids, bounded history, subscriptions and fan-out.

Strategy. A publish encodes the event once, frames it once for chunked and once
for close-delimited connections, appends it to the channel's history, then
writes the same bytes object into every subscriber's transport. That is one
buffer write per subscriber and no task wake-up. A subscriber whose unsent bytes
pass the budget is disconnected on the spot (it resumes from history with
Last-Event-ID) so it can never slow the loop down for the others.

Ids are ``<epoch>-<seq>``: the epoch is fixed when the broker starts, so ids stay
unique across restarts, and an id from another epoch, or one never issued, is
answered like an evicted one: an explicit reset, never "you are up to date".

Everything here runs on the event loop thread and never awaits, so a subscribe
(replay, then join the live set) cannot interleave with a publish: no gap and no
duplicate. Code in other threads publishes with ``publish_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .http11 import encode_chunk
from .sse import encode_event

if TYPE_CHECKING:
    from .app import Sink

__all__ = ["Broker", "Channel", "Published", "Replay", "Subscriber"]

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_BASE36[r])
    return "".join(reversed(out)) or "0"


class Subscriber(Protocol):
    """What the broker needs of a live stream (eventstream.EventStream is one)."""

    sink: Sink
    last_write: float

    def end(self) -> None:
        """The channel was closed: finish the response after what was written."""


@dataclass(slots=True, frozen=True)
class Published:
    id: str
    subscribers: int


@dataclass(slots=True, frozen=True)
class Replay:
    """What a subscriber is sent before it goes live."""

    wire: bytes  # framed events (or b"") to write first
    reset: str | None  # None, "evicted" or "unknown" when Last-Event-ID could not be honoured
    count: int
    closed: bool = False  # the channel is closed: end the response after ``wire``


class Channel:
    __slots__ = ("name", "history", "subscribers", "last_seq", "closed")

    def __init__(self, name: str, history_size: int) -> None:
        self.name = name
        # (seq, raw event bytes, chunk-framed event bytes)
        self.history: deque[tuple[int, bytes, bytes]] = deque(maxlen=history_size)
        self.subscribers: dict[Subscriber, None] = {}  # insertion-ordered set
        self.last_seq = 0
        self.closed = False  # set by Broker.close_channel: no more live subscribers


class Broker:
    """In-process channels. One per server; a backplane could mirror ``publish``."""

    def __init__(
        self,
        history_size: int = 1_000,
        max_subscriber_buffer_bytes: int = 1024 * 1024,
        max_channels: int = 10_000,
    ) -> None:
        self.history_size = history_size
        self.max_subscriber_buffer_bytes = max_subscriber_buffer_bytes
        # Channels are created by any GET; idle ones beyond this are forgotten (LRU)
        # so that random channel names cannot grow memory without bound.
        self.max_channels = max_channels
        self.epoch = _base36(time.time_ns() // 1_000_000) + _base36(int.from_bytes(os.urandom(2), "big"))
        self.channels: OrderedDict[str, Channel] = OrderedDict()
        self.dropped = 0  # subscribers disconnected for being over their budget
        self.delivered = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- channels ------------------------------------------------------------------

    def channel(self, name: str) -> Channel:
        ch = self.channels.get(name)
        if ch is None:
            ch = Channel(name, self.history_size)
            self.channels[name] = ch
            if len(self.channels) > self.max_channels:
                self._evict_idle_channel()
        else:
            self.channels.move_to_end(name)
        return ch

    def _evict_idle_channel(self) -> None:
        for name, ch in self.channels.items():
            if not ch.subscribers:
                del self.channels[name]
                return

    def close_channel(self, name: str) -> int:
        """End every subscriber's stream after the events already written to it.

        For channels with a last event (a finished generation): from now on a
        subscriber gets the history after its Last-Event-ID and then its response
        ends, instead of waiting for events that will never come. The history stays
        until the channel is removed. Returns how many streams were ended.
        """
        ch = self.channels.get(name)
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
        self.close_channel(name)
        self.channels.pop(name, None)

    def subscriber_count(self, name: str) -> int:
        ch = self.channels.get(name)
        return len(ch.subscribers) if ch is not None else 0

    # -- publish -------------------------------------------------------------------

    def publish(self, name: str, data: str, event: str | None = None) -> Published:
        """Append an event to the channel and write it to every subscriber now."""
        ch = self.channel(name)
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        seq = ch.last_seq + 1
        event_id = f"{self.epoch}-{seq}"
        raw = encode_event(data, event=event, id=event_id)  # may raise ValueError: nothing changed yet
        framed = encode_chunk(raw)
        ch.last_seq = seq
        ch.history.append((seq, raw, framed))
        subscribers = ch.subscribers
        if subscribers:
            self._fan_out(ch, raw, framed)
        return Published(event_id, len(subscribers))

    def publish_threadsafe(
        self, loop: asyncio.AbstractEventLoop, name: str, data: str, event: str | None = None
    ) -> concurrent.futures.Future[Published]:
        """Publish from another thread; ``.result()`` on the returned future waits for it."""
        fut: concurrent.futures.Future[Published] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(self.publish(name, data, event))
            except BaseException as e:  # hand any failure to the waiting thread
                fut.set_exception(e)

        loop.call_soon_threadsafe(run)
        return fut

    def _fan_out(self, ch: Channel, raw: bytes, framed: bytes) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        budget = self.max_subscriber_buffer_bytes
        over: list[Subscriber] = []
        for sub in ch.subscribers:
            sink = sub.sink
            if sink.is_closing():
                continue  # its connection task unsubscribes it on the next turn
            sink.write_framed(framed if sink.chunked else raw)
            sub.last_write = now
            if sink.buffered_bytes() > budget:
                over.append(sub)
        self.delivered += len(ch.subscribers) - len(over)
        for sub in over:
            self._drop(ch, sub)

    def _drop(self, ch: Channel, sub: Subscriber) -> None:
        ch.subscribers.pop(sub, None)
        self.dropped += 1
        sub.sink.abort()

    # -- subscribe -------------------------------------------------------------------

    def subscribe(self, name: str, sub: Subscriber, last_event_id: str | None = None) -> Replay:
        """Join the live set and return what to send first, atomically."""
        ch = self.channel(name)
        replay = self.replay(ch, last_event_id, sub.sink.chunked)
        if ch.closed:
            return Replay(replay.wire, replay.reset, replay.count, closed=True)
        ch.subscribers[sub] = None
        return replay

    def unsubscribe(self, name: str, sub: Subscriber) -> None:
        ch = self.channels.get(name)
        if ch is not None:
            ch.subscribers.pop(sub, None)

    def check_resume(self, name: str, last_event_id: str | None) -> str | None:
        """None if ``last_event_id`` can be resumed from, else "evicted" or "unknown"."""
        ch = self.channels.get(name)
        return self._classify(ch, last_event_id)[0]

    def _classify(self, ch: Channel | None, last_event_id: str | None) -> tuple[str | None, int]:
        """(reset reason, seq to replay after)."""
        if not last_event_id:
            return None, -1  # a new subscriber: live only
        epoch, _, seq_text = last_event_id.rpartition("-")
        if epoch != self.epoch or not seq_text.isdigit() or not seq_text.isascii():
            return "unknown", 0
        seq = int(seq_text)
        last = ch.last_seq if ch is not None else 0
        if seq > last:
            return "unknown", 0
        oldest = ch.history[0][0] if ch is not None and ch.history else last + 1
        if seq < oldest - 1:
            return "evicted", 0
        return None, seq

    def replay(self, ch: Channel, last_event_id: str | None, chunked: bool) -> Replay:
        reset, after = self._classify(ch, last_event_id)
        if after < 0:
            return Replay(b"", None, 0)
        events = [framed if chunked else raw for seq, raw, framed in ch.history if seq > after]
        parts = []
        if reset is not None:
            oldest = f"{self.epoch}-{ch.history[0][0]}" if ch.history else None
            payload = json.dumps({"reason": reset, "last_event_id": last_event_id, "oldest_id": oldest})
            notice = encode_event(payload, event="reset")
            parts.append(encode_chunk(notice) if chunked else notice)
        parts.extend(events)
        return Replay(b"".join(parts), reset, len(events))
