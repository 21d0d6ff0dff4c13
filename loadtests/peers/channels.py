"""In-memory channels shared by the peer apps: ids, bounded history, fan-out.

This is the design a user writes with a framework: one ``asyncio.Queue`` per
subscriber, and ``publish`` puts the event into every queue, so a broadcast to
N subscribers wakes N tasks and each encodes the event itself. The peers exist
to be compared with sse_server, so they keep that idiom rather than optimise it.

Subscribing and snapshotting the history happen in one synchronous step (no
``await`` between them), so a Last-Event-ID replay followed by live events has
no gap and no duplicate.

    >>> broker = Broker()
    >>> ch = broker.channel("news")
    >>> sub, backlog = ch.subscribe(last_event_id=None)
    >>> ch.publish("hello", event=None).id
    1
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "Broker",
    "Channel",
    "Event",
    "Subscription",
    "bad_event_name",
    "firehose_params",
    "parse_last_event_id",
]

HISTORY_EVENTS = 1000  # per channel, as the demo contract says
QUEUE_EVENTS = 1000  # bounds the memory one stalled subscriber pins; past it, it is dropped


@dataclass(slots=True, frozen=True)
class Event:
    id: int
    event: str | None
    data: str


@dataclass(slots=True, eq=False)
class Subscription:
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_EVENTS))


class Channel:
    def __init__(self) -> None:
        self.history: deque[Event] = deque(maxlen=HISTORY_EVENTS)
        self.subscribers: set[Subscription] = set()
        self._next_id = 1

    def publish(self, data: str, event: str | None) -> Event:
        ev = Event(self._next_id, event, data)
        self._next_id += 1
        self.history.append(ev)
        for sub in list(self.subscribers):
            try:
                sub.queue.put_nowait(ev)
            except asyncio.QueueFull:
                self._drop(sub)
        return ev

    def subscribe(self, last_event_id: int | None) -> tuple[Subscription, list[Event]]:
        """Register a subscriber and return the history it missed (after last_event_id)."""
        sub = Subscription()
        self.subscribers.add(sub)
        if last_event_id is None:
            return sub, []
        return sub, [ev for ev in self.history if ev.id > last_event_id]

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def _drop(self, sub: Subscription) -> None:
        # The subscriber fell QUEUE_EVENTS behind: end its stream (None) so it
        # reconnects with Last-Event-ID instead of growing without bound.
        self.subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)


class Broker:
    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def channel(self, name: str) -> Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = Channel()
        return ch


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """The Last-Event-ID header, else ?last_event_id=, as an int; None if absent or foreign."""
    raw = header if header is not None else query
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def bad_event_name(name: str | None) -> bool:
    """An event name may not carry a line break (it would start a new SSE field)."""
    return name is not None and ("\n" in name or "\r" in name)


def firehose_params(n: str | None, size: str | None) -> tuple[int, int]:
    """Clamp ?n= and ?size= so one request cannot ask for unbounded work."""
    count = min(max(int(n or 1000), 0), 10_000_000)
    size_bytes = min(max(int(size or 64), 0), 1 << 20)
    return count, size_bytes
