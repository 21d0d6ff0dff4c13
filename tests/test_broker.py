"""Broker semantics without sockets: ids, history, resume classification, budgets."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sse_server.broker import Broker
from sse_server.sse import parse_events


class FakeSink:
    """Records writes; ``backlog`` plays the transport's unsent bytes."""

    def __init__(self, chunked: bool = False) -> None:
        self.chunked = chunked
        self.wire = bytearray()
        self.backlog = 0
        self.freeze = False
        self.aborted = False

    def write_framed(self, wire: bytes) -> None:
        self.wire += wire
        if self.freeze:
            self.backlog += len(wire)

    def buffered_bytes(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class Sub:
    def __init__(self, sink: FakeSink) -> None:
        self.sink = sink
        self.last_write = 0.0

    def end(self) -> None:
        pass


def events_of(sink: FakeSink) -> list[str]:
    return [e.data for e in parse_events(bytes(sink.wire))]


async def test_history_is_bounded_and_ids_are_monotonic() -> None:
    """Each channel keeps its last N events; sequence numbers only grow."""
    broker = Broker(history_size=5)
    ids = [broker.publish("c", str(i)).id for i in range(12)]
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert seqs == list(range(1, 13))
    assert [seq for seq, _, _ in broker.channel("c").history] == list(range(8, 13))


async def test_resume_classification() -> None:
    """Resumable ids replay; evicted, future, foreign and malformed ids are resets."""
    broker = Broker(history_size=3)
    ids = [broker.publish("c", str(i)).id for i in range(6)]
    assert broker.check_resume("c", None) is None
    assert broker.check_resume("c", ids[5]) is None  # up to date
    assert broker.check_resume("c", ids[2]) is None  # oldest-1: the next one is still held
    assert broker.check_resume("c", ids[1]) == "evicted"
    assert broker.check_resume("c", f"{broker.epoch}-99") == "unknown"
    assert broker.check_resume("c", "nope") == "unknown"
    assert broker.check_resume("c", f"{Broker().epoch}-3") == "unknown"
    assert broker.check_resume("never-published", f"{broker.epoch}-1") == "unknown"


async def test_subscribe_replays_then_receives_live_in_both_framings() -> None:
    """A resuming subscriber gets the missed events, then live ones; chunked framing is applied once."""
    broker = Broker()
    ids = [broker.publish("c", f"m{i}").id for i in range(4)]
    raw_sink, chunked_sink = FakeSink(), FakeSink(chunked=True)
    for sink in (raw_sink, chunked_sink):
        replay = broker.subscribe("c", Sub(sink), ids[1])
        sink.write_framed(replay.wire)
    broker.publish("c", "live")
    assert events_of(raw_sink) == ["m2", "m3", "live"]
    assert chunked_sink.wire.startswith(b"%x\r\n" % len(broker.channel("c").history[2][1]))


async def test_over_budget_subscriber_is_dropped_alone() -> None:
    """A subscriber whose unsent bytes pass the budget is aborted and counted; others keep receiving."""
    broker = Broker(max_subscriber_buffer_bytes=1000)
    slow, fast = Sub(FakeSink()), Sub(FakeSink())
    slow.sink.freeze = True
    broker.subscribe("c", slow)
    broker.subscribe("c", fast)
    for i in range(20):
        broker.publish("c", "x" * 100)
    assert slow.sink.aborted and not fast.sink.aborted
    assert broker.dropped == 1
    assert broker.subscriber_count("c") == 1
    assert len(events_of(fast.sink)) == 20


async def test_idle_channels_beyond_the_cap_are_forgotten() -> None:
    """Channel names are client-chosen: past max_channels, idle ones are evicted, live ones kept."""
    broker = Broker(max_channels=3)
    keeper = Sub(FakeSink())
    broker.subscribe("live", keeper)
    for name in ("a", "b", "c", "d"):
        broker.publish(name, "x")
    assert len(broker.channels) == 3
    assert "live" in broker.channels


async def test_publish_rejects_injection_and_changes_nothing() -> None:
    """An event name with a newline raises before the history or the ids move."""
    broker = Broker()
    with pytest.raises(ValueError):
        broker.publish("c", "data", event="bad\nname")
    assert broker.channel("c").last_seq == 0 and not broker.channel("c").history


async def test_publish_threadsafe_from_worker_threads() -> None:
    """Threads publish through the loop; every event lands once, in per-thread order."""
    broker = Broker()
    sink = FakeSink()
    broker.subscribe("t", Sub(sink))
    loop = asyncio.get_running_loop()
    results: list[object] = []

    def worker(n: int) -> None:
        for i in range(50):
            results.append(broker.publish_threadsafe(loop, "t", f"{n}:{i}").result(timeout=5))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    async with asyncio.timeout(10):
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.01)
    got = events_of(sink)
    assert len(got) == 200 and len(results) == 200
    for n in range(4):
        assert [g for g in got if g.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(50)]
