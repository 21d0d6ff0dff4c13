"""The in-process engine without sockets: ids, history, resume, channel table, budgets."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sse_server.channels import ChannelLimitError, EncodedEvent, EventTooLargeError, MemoryEngine, parse_event_id
from sse_server.sse import parse_events


class Recorder:
    """A subscriber that keeps what it is delivered; ``over_budget`` plays a stalled reader."""

    def __init__(self) -> None:
        self.events: list[EncodedEvent] = []
        self.over_budget = False
        self.ended = False

    def deliver(self, event: EncodedEvent) -> bool:
        self.events.append(event)
        return not self.over_budget

    def end(self) -> None:
        self.ended = True

    @property
    def data(self) -> list[str]:
        return [e.data for e in parse_events(b"".join(ev.raw for ev in self.events))]


def seq(event_id: str) -> int:
    parsed = parse_event_id(event_id)
    assert parsed is not None, event_id
    return parsed[1]


async def test_one_sequence_across_channels_and_bounded_history() -> None:
    """Ids come from one sequence for every channel; each channel keeps its last N events."""
    engine = MemoryEngine(history_size=3)
    ids = [(await engine.publish("ab"[i % 2], str(i))).id for i in range(10)]
    assert [seq(i) for i in ids] == list(range(1, 11))
    assert [e.seq for e in engine.history_after("a", 0).events] == [5, 7, 9]
    assert [e.seq for e in engine.history_after("b", 0).events] == [6, 8, 10]
    assert engine.history_after("a", 0).evicted_upto == 3


async def test_resume_replays_after_the_id_then_goes_live() -> None:
    """A subscriber resuming from an id gets what followed it, then live events, each once."""
    engine = MemoryEngine()
    ids = [(await engine.publish("c", f"m{i}")).id for i in range(4)]
    rec = Recorder()
    sub = await engine.subscribe(["c"], rec, ids[1])
    assert [e.id for e in sub.replay] == ids[2:] and not sub.resets
    await engine.publish("c", "live")
    assert rec.data == ["live"]


async def test_resume_classification() -> None:
    """Up to date and oldest-1 resume cleanly; evicted, future, foreign and malformed ids reset."""
    engine = MemoryEngine(history_size=3)
    ids = [(await engine.publish("c", str(i))).id for i in range(6)]
    other_epoch = MemoryEngine().epoch

    async def reasons(last_id: str | None, channel: str = "c") -> list[str]:
        sub = await engine.subscribe([channel], Recorder(), last_id)
        engine.unsubscribe(sub)
        return [r.reason for r in sub.resets]

    assert await reasons(None) == []
    assert await reasons(ids[5]) == []
    assert await reasons(ids[2]) == []  # the next one is still held
    assert await reasons(ids[1]) == ["evicted"]
    assert await reasons(f"{engine.epoch}-99") == ["unknown"]  # never issued
    assert await reasons("nope") == ["unknown"]
    assert await reasons(f"{other_epoch}-3") == ["unknown"]
    assert await reasons(f"{engine.epoch}-" + "9" * 5000) == ["unknown"]  # no giant int parse
    assert await reasons(f"{engine.epoch}-\u00b2") == ["unknown"]  # a non-ASCII digit


async def test_a_forgotten_channel_made_again_never_reuses_ids_and_resets_old_ones() -> None:
    """After the LRU forgets a channel, new events get new ids and a client with an old id gets a reset."""
    engine = MemoryEngine(max_channels=2)
    old = (await engine.publish("news", "before")).id
    await engine.publish("x", "1")
    await engine.publish("y", "2")  # the table is full: "news", least recently used, is forgotten
    assert engine.channel_names == ["x", "y"]
    new = (await engine.publish("news", "after")).id
    assert seq(new) > seq(old)
    sub = await engine.subscribe(["news"], Recorder(), old)
    assert [r.reason for r in sub.resets] == ["evicted"]
    assert [e.id for e in sub.replay] == [new]


async def test_lru_forgets_the_least_recently_used_idle_channel() -> None:
    """Past max_channels the oldest idle channel goes; one with a subscriber stays however old."""
    engine = MemoryEngine(max_channels=3)
    await engine.subscribe(["live"], Recorder())
    for name in ("a", "b", "c"):
        await engine.publish(name, "x")
    assert engine.channel_names == ["live", "b", "c"]
    await engine.publish("b", "touch")  # b is now the most recently used
    await engine.publish("d", "x")
    assert engine.channel_names == ["live", "b", "d"]


async def test_a_full_table_of_live_channels_refuses_a_new_one() -> None:
    """When every channel has subscribers, a new channel is refused and nothing changes."""
    engine = MemoryEngine(max_channels=2)
    first, second = Recorder(), Recorder()
    await engine.subscribe(["a"], first)
    await engine.subscribe(["b"], second)
    with pytest.raises(ChannelLimitError):
        await engine.subscribe(["a", "c"], Recorder())
    with pytest.raises(ChannelLimitError):
        await engine.publish("c", "x")
    assert sorted(engine.channel_names) == ["a", "b"] and engine.subscriber_count("a") == 1
    published = await engine.publish("a", "still")
    assert first.data == ["still"] and seq(published.id) == 1  # the refused publish took no id


async def test_several_channels_resume_from_one_id_in_order() -> None:
    """One id resumes a multi-channel subscription: the events after it from every channel, by sequence."""
    engine = MemoryEngine()
    ids = [(await engine.publish(ch, f"{ch}{i}")).id for i, ch in enumerate("abcab")]
    sub = await engine.subscribe(["a", "b"], Recorder(), ids[0])
    assert [e.channel + e.id for e in sub.replay] == ["b" + ids[1], "a" + ids[3], "b" + ids[4]]
    assert not sub.resets


async def test_over_budget_subscriber_is_dropped_alone() -> None:
    """A subscriber that reports itself over budget leaves the live set and is counted; others go on."""
    engine = MemoryEngine()
    slow, fast = Recorder(), Recorder()
    await engine.subscribe(["c"], slow)
    await engine.subscribe(["c"], fast)
    slow.over_budget = True
    for i in range(5):
        await engine.publish("c", str(i))
    assert len(slow.events) == 1 and fast.data == ["0", "1", "2", "3", "4"]
    assert engine.dropped == 1 and engine.subscriber_count("c") == 1


async def test_publish_rejects_injection_and_changes_nothing() -> None:
    """An event name with a newline raises before the history or the sequence moves."""
    engine = MemoryEngine()
    with pytest.raises(ValueError):
        await engine.publish("c", "data", event="bad\nname")
    assert engine.channel_count == 0
    assert seq((await engine.publish("c", "ok")).id) == 1


async def test_closed_channel_ends_subscribers_and_serves_late_ones_its_history() -> None:
    """Closing ends live streams; a later subscriber from the start gets the whole history, closed."""
    engine = MemoryEngine()
    live = Recorder()
    await engine.subscribe(["job"], live)
    ids = [(await engine.publish("job", f"t{i}")).id for i in range(3)]
    assert engine.close_channel("job") == 1 and live.ended
    late = await engine.subscribe(["job"], Recorder(), from_start=True)
    assert [e.id for e in late.replay] == ids and late.closed and not late.resets
    assert engine.subscriber_count("job") == 0


async def test_from_start_ignores_other_channels_being_forgotten() -> None:
    """Replaying a channel from its start is no reset because some other channel was forgotten."""
    engine = MemoryEngine()
    await engine.publish("old", "x")
    engine.remove_channel("old")
    await engine.publish("job", "t0")
    sub = await engine.subscribe(["job"], Recorder(), from_start=True)
    assert not sub.resets and [e.channel for e in sub.replay] == ["job"]


class SlowHistoryEngine(MemoryEngine):
    """An engine whose history read awaits, as a networked one does; publishes land meanwhile."""

    def __init__(self, reads_wait_s: float) -> None:
        super().__init__()
        self.reads_wait_s = reads_wait_s
        self.reading = asyncio.Event()

    async def _read_history(self, channel: str, after_seq: int):  # type: ignore[no-untyped-def]
        self.reading.set()
        await asyncio.sleep(self.reads_wait_s)
        return self.history_after(channel, after_seq)


async def test_resume_has_no_gap_or_duplicate_when_history_read_awaits() -> None:
    """Events published while a resuming subscriber reads history arrive once each, in order."""
    engine = SlowHistoryEngine(reads_wait_s=0.02)
    first = [(await engine.publish(ch, f"{ch}-early{i}")).id for i, ch in enumerate("abab")]

    async def publisher() -> list[str]:
        await engine.reading.wait()
        ids = []
        for i in range(40):  # across the whole history read of both channels
            ids.append((await engine.publish("ab"[i % 2], f"during{i}")).id)
            await asyncio.sleep(0.001)
        return ids

    rec = Recorder()
    task = asyncio.create_task(publisher())
    sub = await engine.subscribe(["a", "b"], rec, first[1])
    during = await task
    got = [e.id for e in sub.replay] + [e.id for e in rec.events]
    assert got == first[2:] + during  # nothing missing, nothing twice, in sequence order
    assert sorted(seq(i) for i in got) == [seq(i) for i in got]


async def test_publish_threadsafe_from_worker_threads() -> None:
    """Threads publish through the loop; every event lands once, in per-thread order."""
    engine = MemoryEngine()
    rec = Recorder()
    await engine.subscribe(["t"], rec)
    loop = asyncio.get_running_loop()
    results: list[object] = []

    def worker(n: int) -> None:
        for i in range(50):
            results.append(engine.publish_threadsafe(loop, "t", f"{n}:{i}").result(timeout=5))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    async with asyncio.timeout(10):
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.01)
    got = rec.data
    assert len(got) == 200 and len(results) == 200
    for n in range(4):
        assert [g for g in got if g.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(50)]


async def test_history_is_bounded_by_bytes_per_channel_and_in_total() -> None:
    """Bytes bound history as well as count: per channel, then across channels, least recently used first."""
    event_bytes = len(b"id: x-1\ndata: \n\n") + 1000
    cost = 2 * event_bytes + 200  # what the engine charges: the bytes, the framed copy, the object
    engine = MemoryEngine(history_bytes=10 * cost, history_total_bytes=25 * cost)
    for _ in range(30):
        await engine.publish("a", "x" * 1000)
    assert len(engine.history_after("a", 0).events) <= 10
    assert engine.history_after("a", 0).evicted_upto > 0
    for i in range(30):
        await engine.publish("b" if i % 2 else "c", "x" * 1000)
    assert engine.stored_bytes <= 25 * cost
    held = {ch: len(engine.history_after(ch, 0).events) for ch in "abc"}
    assert held["a"] < held["b"] and held["a"] < held["c"]  # "a", least recently used, gave up first
    engine.remove_channel("b")
    engine.remove_channel("c")
    engine.remove_channel("a")
    assert engine.stored_bytes == 0


async def test_an_event_over_the_encoded_limit_is_refused_and_changes_nothing() -> None:
    """The limit is on encoded bytes: a body of newlines grows sixfold, and is refused whole."""
    engine = MemoryEngine(max_event_bytes=1000)
    rec = Recorder()
    await engine.subscribe(["c"], rec)
    with pytest.raises(EventTooLargeError) as caught:
        await engine.publish("c", "\n" * 200)  # 200 bytes of text, 1,200+ encoded
    assert caught.value.size > 1000 and rec.events == []
    assert engine.history_after("c", 0).events == [] and engine.stored_bytes == 0
    assert seq((await engine.publish("c", "x" * 900)).id) == 1  # the refused one took no id
