"""The channel engine interface: publish, subscribe with resume, and the ids both share.

An engine carries channels; whatever carries them (this process, a Redis backplane),
streams and routes see one API:

    published = await engine.publish("news", "hello", event="note")
    again = await engine.publish("news", "hello", event="note", idempotency_key="k1")
    sub = await engine.subscribe(["news", "alerts"], stream, last_event_id)
    ...                      # sub.replay first, then stream.deliver(event) per live event
    engine.unsubscribe(sub)

Ids are ``<epoch>-<seq>``: one sequence per engine epoch, shared by every channel,
so an id is never reused within an epoch even when a channel is forgotten and made
again, and one id orders events across channels (a stream of several channels
resumes all of them from its last id). Ids are opaque to clients.

Resume without gap or duplicate, even when reading history awaits: the subscriber
first joins each channel's *joining* list, where live events are buffered; then the
history after its id is read; then history and buffered events are merged by
sequence (an event in both is sent once), and the subscriber joins the live set, with
no await between the merge and the join. An engine implements ``_read_history`` and
the live-set bookkeeping; the algorithm lives here once.

Whatever cannot be honoured is said, never skipped: an id from another epoch, one
never issued, or one older than what a channel still holds gets a ``Reset`` for that
channel, and the subscriber is sent what is still there.

Idempotent publishes: a publish with an ``idempotency_key`` is stored once per
(channel, key) within the engine's window; a retry within it answers the first
``Published`` again (``replayed=True``) and stores and delivers nothing. The key is
remembered with a fingerprint of the event, so reusing it for a different event is
refused (IdempotencyKeyReusedError) rather than silently dropped. An engine does the
check and the store in the same atomic step as the publish itself, so two retries
racing on two nodes still store one event.

Nothing here knows HTTP. An ``EncodedEvent`` carries the event as SSE bytes plus an
opaque ``framed`` slot that the connection layer fills with its own framing, once,
for every subscriber that frames the same way.
"""

from __future__ import annotations

import hashlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ChannelLimitError",
    "EncodedEvent",
    "Engine",
    "EngineUnavailableError",
    "EventTooLargeError",
    "History",
    "IdempotencyKeyReusedError",
    "Published",
    "Reset",
    "Subscriber",
    "Subscription",
    "new_epoch",
    "publish_fingerprint",
    "parse_event_id",
]

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_BASE36[r])
    return "".join(reversed(out)) or "0"


def new_epoch() -> str:
    """A fresh epoch: the start time in ms plus 16 random bits, base 36 (no ``-`` or ``;``)."""
    return _base36(time.time_ns() // 1_000_000) + _base36(int.from_bytes(os.urandom(2), "big"))


_MAX_SEQ_DIGITS = 20  # 2**64 has 20 digits; a longer "sequence" is not one we issued


def parse_event_id(event_id: str) -> tuple[str, int] | None:
    """``"<epoch>-<seq>"`` (optionally followed by ``;<channel>``) -> (epoch, seq), else None.

    >>> parse_event_id("lq3k9a1b2-17;news")
    ('lq3k9a1b2', 17)
    >>> parse_event_id("17") is None
    True
    """
    base = event_id.partition(";")[0]
    epoch, sep, seq_text = base.rpartition("-")
    if (
        not sep
        or not epoch
        or not seq_text.isascii()
        or not seq_text.isdigit()
        or len(seq_text) > _MAX_SEQ_DIGITS
    ):
        return None
    return epoch, int(seq_text)


class EncodedEvent:
    """One published event, encoded once as SSE bytes for every subscriber.

    ``framed`` belongs to the layer that writes to sockets: it caches the event in
    that layer's framing (a chunk) the first time a subscriber needs it, so a
    broadcast frames once. ``tagged`` caches the form sent on multi-channel streams.
    """

    __slots__ = ("channel", "seq", "id", "raw", "framed", "tagged")

    def __init__(self, channel: str, seq: int, id: str, raw: bytes) -> None:
        self.channel = channel
        self.seq = seq
        self.id = id
        self.raw = raw
        self.framed: bytes | None = None
        self.tagged: EncodedEvent | None = None

    def __repr__(self) -> str:
        return f"EncodedEvent({self.channel!r}, {self.id!r}, {len(self.raw)} bytes)"


class Subscriber(Protocol):
    """A live stream as an engine sees it: one call per event."""

    def deliver(self, event: EncodedEvent) -> bool:
        """Write the event; False if the subscriber must be dropped (over its budget)."""
        ...

    def end(self) -> None:
        """The channel ended (its last event was published): finish after what was sent."""
        ...


@dataclass(slots=True, frozen=True)
class Published:
    id: str
    subscribers: int
    replayed: bool = False  # the answer to an earlier publish with the same idempotency key


def publish_fingerprint(data: str, event: str | None) -> str:
    """What an idempotency key is remembered with: the same key with another event is a client bug."""
    digest = hashlib.sha256(f"{event or ''}\n{data}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32]  # 128 bits: no accidental collision, half the bytes kept per key


@dataclass(slots=True, frozen=True)
class Reset:
    """A resume point that could not be honoured for one channel."""

    channel: str
    reason: str  # "evicted": older than the channel's history; "unknown": not an id of this epoch
    last_event_id: str
    oldest_id: str | None  # the oldest event the channel still holds


@dataclass(slots=True)
class History:
    """What an engine holds of one channel after a sequence number."""

    events: list[EncodedEvent]
    oldest_id: str | None
    evicted_upto: int  # the newest of its events that history no longer holds (0: none)
    # The sequence when a channel was last forgotten before this one was made: a
    # channel of the same name may have had events up to here, and they are gone.
    horizon: int
    closed: bool = False  # the channel has had its last event

    def lost_after(self, seq: int, from_start: bool) -> bool:
        """Whether events after ``seq`` may be missing from ``events``."""
        if from_start:
            return self.evicted_upto > 0  # "everything this channel held": only its own losses count
        return seq < max(self.evicted_upto, self.horizon)


class EventTooLargeError(ValueError):
    """An event over the engine's maximum encoded size; nothing was stored."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the event is {size} bytes encoded; the limit is {limit}")
        self.size = size
        self.limit = limit


class IdempotencyKeyReusedError(Exception):
    """An idempotency key already used on this channel, within the window, for a different event."""

    def __init__(self, channel: str) -> None:
        super().__init__(f"this Idempotency-Key was already used on channel {channel!r} for a different event; "
                         "use a new key for each distinct publish")


class ChannelLimitError(Exception):
    """The channel table is full of channels that have subscribers; nothing was created."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the server holds its maximum of {limit} channels; try again later")
        self.limit = limit


class EngineUnavailableError(Exception):
    """The engine could not reach its store in time (a backplane down or stalled).

    For a publish: it was not acknowledged, so it may or may not have been stored;
    nothing was delivered from this call. Answer 503 with Retry-After.
    """


@dataclass(slots=True, eq=False)
class Subscription:
    """One subscriber on one or more channels, as returned by ``Engine.subscribe``."""

    channels: tuple[str, ...]
    subscriber: Subscriber
    replay: Sequence[EncodedEvent] = ()  # send these first, in order
    resets: Sequence[Reset] = ()
    closed: bool = False  # every channel has ended: the stream ends after the replay
    # Live events that arrive while history is read; a list only during subscribe,
    # so an idle subscription (the common case, by the thousand) holds no lists.
    buffer: list[EncodedEvent] | None = None


class Engine(ABC):
    """What every channel engine provides; see the module docstring for the contract."""

    epoch: str
    # Running totals for metrics: plain integer adds on paths that run anyway, read
    # when /metrics is scraped. Deliveries are counted per publish (its subscriber
    # count), never per subscriber.
    published = 0  # events stored
    delivered = 0  # live deliveries: subscribers an event was written to
    dropped = 0  # subscribers disconnected for being over their budget
    resumes_replayed = 0  # subscribes with a Last-Event-ID honoured in full
    resumes_reset = 0  # ... that got a reset for at least one channel

    def subscriber_total(self) -> int:
        """Live subscriptions on this node, summed over channels (a gauge for metrics)."""
        return 0

    @abstractmethod
    async def publish(
        self, channel: str, data: str, event: str | None = None, *, idempotency_key: str | None = None,
    ) -> Published:
        """Store the event where every node can replay it, then deliver it to subscribers.

        With ``idempotency_key``, a publish already stored on ``channel`` with that key
        within the window is answered again instead (see the module docstring).
        Raises ValueError (nothing stored) for an event that cannot be encoded,
        ChannelLimitError when the channel would be new and the table is full, and
        IdempotencyKeyReusedError for a key remembered with a different event.
        """

    @abstractmethod
    def subscriber_count(self, channel: str) -> int: ...

    @property
    @abstractmethod
    def channel_count(self) -> int: ...

    @abstractmethod
    async def close(self) -> None:
        """Release the engine's connections and timers (server shutdown)."""

    async def history(self, channel: str, after_seq: int = 0) -> History:
        """What the engine holds of ``channel`` after ``after_seq`` (all of it by default),
        wherever it was published. May raise EngineUnavailableError."""
        return await self._read_history(channel, after_seq)

    async def subscribed_anywhere(self, channels: Sequence[str]) -> list[bool]:
        """Whether each channel has a live subscriber on any node sharing this engine.

        An in-process engine is the only node; a shared one asks its store (and may
        raise EngineUnavailableError).
        """
        return [self.subscriber_count(ch) > 0 for ch in channels]

    async def ready(self) -> bool:
        """Whether the engine can serve publishes and subscribes now (``GET /readyz``); cheap.

        An in-process engine always can; a networked one answers whether its store does.
        """
        return True

    # -- what an engine implements for subscribe ------------------------------------

    @abstractmethod
    def _join(self, sub: Subscription) -> None:
        """Put ``sub`` on each channel's joining list (creating channels as needed).

        Raises ChannelLimitError with nothing joined when a channel cannot be made.
        """

    @abstractmethod
    def _go_live(self, sub: Subscription) -> None:
        """Move ``sub`` from the joining lists to the live sets; must not await."""

    @abstractmethod
    def _leave(self, sub: Subscription) -> None:
        """Take ``sub`` off every joining list and live set it is on."""

    @abstractmethod
    async def _read_history(self, channel: str, after_seq: int) -> History: ...

    @abstractmethod
    def _last_seq(self) -> int:
        """The highest sequence issued in this epoch, as far as this node knows."""

    # -- the shared algorithm -----------------------------------------------------------

    async def subscribe(
        self,
        channels: Sequence[str],
        subscriber: Subscriber,
        last_event_id: str | None = None,
        *,
        from_start: bool = False,
    ) -> Subscription:
        """Join ``channels`` live and return what to send first, gap- and duplicate-free.

        With no ``last_event_id`` the subscriber gets live events only, or, with
        ``from_start``, everything the channels still hold first.
        """
        sub = Subscription(tuple(dict.fromkeys(channels)), subscriber, buffer=[])
        after = self._resume_after(last_event_id, from_start)
        self._join(sub)
        try:
            if after is not None:
                await self._collect_replay(sub, after, last_event_id or "", from_start and not last_event_id)
            else:
                sub.closed = await self._all_closed(sub.channels)
        except BaseException:
            self._leave(sub)
            raise
        # No await from here on: the buffer is complete and the join is atomic.
        buffered, sub.buffer = sub.buffer or [], None
        if buffered:
            seen = {e.seq for e in sub.replay}
            floor = after if after is not None and after > 0 else 0
            extra = [e for e in buffered if e.seq not in seen and e.seq > floor]
            if extra:
                sub.replay = sorted([*sub.replay, *extra], key=_seq_of)
        if sub.closed:
            self._leave(sub)
        else:
            self._go_live(sub)
        return sub

    def _resume_after(self, last_event_id: str | None, from_start: bool) -> int | None:
        """The sequence to replay after; -1 for "unknown" (replay all, with a reset); None: live only."""
        if not last_event_id:
            return 0 if from_start else None
        parsed = parse_event_id(last_event_id)
        if parsed is None or parsed[0] != self.epoch or parsed[1] > self._last_seq():
            return -1
        return parsed[1]

    async def _collect_replay(self, sub: Subscription, after: int, last_event_id: str, from_start: bool) -> None:
        histories = [await self._read_history(ch, max(after, 0)) for ch in sub.channels]
        resets = []
        for name, history in zip(sub.channels, histories, strict=True):
            reason = "unknown" if after < 0 else "evicted" if history.lost_after(after, from_start) else None
            if reason is not None:
                resets.append(Reset(name, reason, last_event_id, history.oldest_id))
        sub.resets = resets or ()
        if last_event_id:
            if resets:
                self.resumes_reset += 1
            else:
                self.resumes_replayed += 1
        sub.closed = all(h.closed for h in histories)
        events = [e for h in histories for e in h.events]
        if len(histories) > 1:
            events.sort(key=_seq_of)
        sub.replay = events or ()

    async def _all_closed(self, channels: Iterable[str]) -> bool:
        for ch in channels:
            if not (await self._read_history(ch, self._last_seq())).closed:
                return False
        return True

    def unsubscribe(self, sub: Subscription) -> None:
        self._leave(sub)


def _seq_of(event: EncodedEvent) -> int:
    return event.seq

