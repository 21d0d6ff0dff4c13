"""``python -m sse_server --workers 2`` as a user runs it: real processes, a real redis-server.

Every test starts the supervisor through tests/processes.py and reads what it logs
(which pid serves which worker index) and what /metrics says about each worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sse_server.sse import Event

from .http_cases import get, req
from .http_client import exchange
from .processes import Running, env_for, start_cli
from .redis_server import RedisServer, require_redis
from .sse_client import SSEClient
from .waiting import eventually

pytestmark = pytest.mark.redis

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    require_redis()
    async with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
async def supervisor(tmp_path: Path, redis: RedisServer) -> AsyncIterator[Running]:
    """``--workers 2 --backplane``, stopped (and its workers with it) at the end of the test."""
    running = await start_cli(tmp_path, "--workers", "2", "--backplane", redis.url, "--shutdown-timeout", "2",
                              "--heartbeat", "1", timeout_s=40)
    try:
        yield running
    finally:
        pids = [pid for _, pid in starts(running)]
        if running.proc.returncode is None:
            await running.stop(signal.SIGKILL)
        await eventually(lambda: not any(alive(p) for p in pids), 15, "workers gone after their supervisor")


def started_pids(running: Running) -> dict[int, int]:
    """Worker index -> pid of its latest start, from the supervisor's log."""
    pids: dict[int, int] = {}
    for line in running.lines:
        if m := _STARTED.search(line):
            pids[int(m.group(1))] = int(m.group(2))
    return pids


def starts(running: Running) -> list[tuple[int, int]]:
    """Every (index, pid) start logged so far, in order."""
    return [(int(m.group(1)), int(m.group(2))) for line in running.lines if (m := _STARTED.search(line))]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a container's init may not reap orphans at once)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


async def scrape(running: Running) -> Samples:
    """GET /metrics, parsed by prometheus_client: (sample name, sorted labels) -> value."""
    reply = await exchange(running.host, running.port, get(b"/metrics"))
    assert reply.status == 200, reply
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def per_worker(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["worker"]: v for (n, labels), v in samples.items() if n == name and len(labels) == 1}


async def publish(running: Running, channel: str, data: str) -> str:
    reply = await exchange(running.host, running.port, req(
        f"POST /channels/{channel}/events HTTP/1.1".encode(), b"Host: t",
        f"Content-Length: {len(data)}".encode(), body=data.encode()))
    assert reply.status == 202, reply
    event_id: str = json.loads(reply.body)["id"]
    return event_id


class Reader:
    """One subscriber, read in the background: its events, and whether its connection ended."""

    def __init__(self, client: SSEClient) -> None:
        self.client = client
        self.events: list[Event] = []
        self.ended = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                self.events.append(await self.client.next_event())
        except EOFError:
            self.ended.set()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


async def subscribe(running: Running, channel: str, n: int, last_id: str | None = None) -> list[Reader]:
    """``n`` subscribers of ``channel``, connecting at once as a page's reconnecting clients do."""
    headers = {"Last-Event-ID": last_id} if last_id else None
    async with asyncio.timeout(15):
        clients = await asyncio.gather(*(
            SSEClient.connect(running.port, f"/channels/{channel}/events", headers=headers) for _ in range(n)))
    for client in clients:
        assert client.reply.status == 200, client.reply
    return [Reader(client) for client in clients]


async def test_subscribers_land_on_both_workers_and_one_publish_reaches_all(supervisor: Running) -> None:
    """20 subscribers spread over both workers, as any scrape of /metrics reports them worker by worker;
    one publish reaches all 20 with the same id."""
    readers = await subscribe(supervisor, "news", 20)
    try:
        for _ in range(4):  # several connections: whichever worker takes the scrape, it reports both
            samples = await scrape(supervisor)
            subscribers = per_worker(samples, "sse_subscribers")
            assert set(subscribers) == {"0", "1"} and sum(subscribers.values()) == 20, subscribers
            assert min(subscribers.values()) >= 1, f"every subscriber on one worker: {subscribers}"
            assert per_worker(samples, "process_resident_memory_bytes").keys() == {"0", "1"}
            assert per_worker(samples, "process_start_time_seconds").keys() == {"0", "1"}
            assert max(per_worker(samples, "sse_connections").values()) >= 11  # 20 streams and this scrape
            assert samples[("sse_workers", ())] == 2 and samples[("sse_workers_scraped", ())] == 2
            assert per_worker(samples, "sse_worker_up") == {"0": 1, "1": 1}
        event_id = await publish(supervisor, "news", "hello")
        await eventually(lambda: all(r.events for r in readers), 10, "every subscriber got the event")
        assert {(r.events[0].id, r.events[0].data) for r in readers} == {(event_id, "hello")}
        delivered = per_worker(await scrape(supervisor), "sse_deliveries_total")
        assert delivered == subscribers, "each worker delivered the event to its own subscribers"
    finally:
        await asyncio.gather(*(r.close() for r in readers))


async def test_a_worker_that_does_not_answer_is_reported_missing(supervisor: Running) -> None:
    """With worker 1 frozen (SIGSTOP), a scrape still answers within seconds, from worker 0 alone, and says
    worker 1 is missing (sse_worker_up 0, sse_workers_scraped 1) instead of leaving it out silently."""
    frozen = started_pids(supervisor)[1]
    os.kill(frozen, signal.SIGSTOP)
    try:
        samples: Samples | None = None
        for _ in range(12):  # a connection hashed to the frozen worker's socket waits: try another
            try:
                async with asyncio.timeout(3):
                    samples = await scrape(supervisor)
                break
            except TimeoutError:
                continue
        assert samples is not None, "no scrape reached worker 0"
        assert per_worker(samples, "sse_worker_up") == {"0": 1, "1": 0}
        assert samples[("sse_workers_scraped", ())] == 1 and samples[("sse_workers", ())] == 2
        assert per_worker(samples, "sse_connections").keys() == {"0"}
    finally:
        os.kill(frozen, signal.SIGCONT)
    await eventually(lambda: any("worker 1 did not answer for /metrics" in line for line in supervisor.lines), 5)


async def test_a_killed_worker_comes_back_and_its_clients_miss_nothing(supervisor: Running) -> None:
    """SIGKILL one worker: a new pid is logged; its clients resume with Last-Event-ID and get every
    event they missed exactly once, in order, like the clients of the other worker."""
    readers = await subscribe(supervisor, "orders", 10)
    resumed: list[Reader] = []
    try:
        on_worker = per_worker(await scrape(supervisor), "sse_subscribers")
        index = max(on_worker, key=lambda w: on_worker[w])  # the worker with the most clients dies
        first = await publish(supervisor, "orders", "e1")
        await eventually(lambda: all(len(r.events) == 1 for r in readers), 10, "e1 everywhere")
        victim = started_pids(supervisor)[int(index)]
        before = starts(supervisor)
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: sum(r.ended.is_set() for r in readers) == on_worker[index], 10,
                         "the killed worker's clients saw their connections end")
        cut = [r for r in readers if r.ended.is_set()]
        kept = [r for r in readers if not r.ended.is_set()]
        missed = [await publish(supervisor, "orders", f"e{i}") for i in (2, 3)]  # while they are away
        await eventually(lambda: len(starts(supervisor)) > len(before), 15, "the worker started again")
        new_index, new_pid = starts(supervisor)[-1]
        assert new_index == int(index) and new_pid != victim
        await eventually(lambda: not alive(victim), 5)
        resumed = await subscribe(supervisor, "orders", len(cut), last_id=first)
        last = await publish(supervisor, "orders", "e4")
        wanted = [first, *missed, last]
        await eventually(lambda: all(len(r.events) >= 3 for r in resumed) and all(len(r.events) >= 4 for r in kept),
                         10, "every event reached every client")
        for r in resumed:
            assert [e.id for e in r.events] == wanted[1:], "a resumed client got each missed event once, in order"
            assert [e.data for e in r.events] == ["e2", "e3", "e4"]
        for r in kept:
            assert [e.id for e in r.events] == wanted
        await eventually(lambda: any(f"worker {index} ready (pid {new_pid})" in line for line in supervisor.lines),
                         15, "the new worker serves")
        samples = await scrape(supervisor)
        assert per_worker(samples, "sse_worker_up") == {"0": 1, "1": 1}
        assert sum(per_worker(samples, "sse_subscribers").values()) == len(readers)
    finally:
        await asyncio.gather(*(r.close() for r in readers + resumed))


async def test_sigterm_stops_every_worker_in_bounded_time_with_status_0(supervisor: Running) -> None:
    """SIGTERM with streams open on both workers: they end, every worker exits, the supervisor exits 0 in time."""
    readers = await subscribe(supervisor, "live", 10)
    try:
        assert min(per_worker(await scrape(supervisor), "sse_subscribers").values()) >= 1
        pids = list(started_pids(supervisor).values())
        assert len(pids) == 2 and all(alive(p) for p in pids)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = await supervisor.stop(signal.SIGTERM, timeout_s=15)
        elapsed_s = loop.time() - started
        assert status == 0, "".join(supervisor.lines[-20:])
        assert elapsed_s < 2 + 5, elapsed_s  # --shutdown-timeout 2 plus the supervisor's margin
        assert not any(alive(p) for p in pids), "a worker outlived its supervisor"
        await eventually(lambda: all(r.ended.is_set() for r in readers), 5, "every stream ended")
    finally:
        await asyncio.gather(*(r.close() for r in readers))


async def test_a_killed_supervisor_leaves_no_worker_behind(supervisor: Running) -> None:
    """SIGKILL the supervisor: each worker notices (its pipe ends) and exits by itself."""
    pids = list(started_pids(supervisor).values())
    assert len(pids) == 2
    await supervisor.stop(signal.SIGKILL)
    await eventually(lambda: not any(alive(p) for p in pids), 10, "workers exited after the supervisor died")


async def test_sighup_replaces_every_worker_while_the_port_keeps_answering(supervisor: Running) -> None:
    """SIGHUP: every worker gets a new pid, and GET /healthz in a loop meanwhile never fails."""
    old = started_pids(supervisor)
    seen = len(supervisor.lines)
    supervisor.proc.send_signal(signal.SIGHUP)
    answered = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not any("restart done" in line for line in supervisor.lines[seen:]):
        assert loop.time() < deadline, "".join(supervisor.lines[seen:])
        assert answered < 20_000
        reply = await exchange(supervisor.host, supervisor.port, get(b"/healthz"))  # refused or reset: fails here
        assert reply.status == 200, reply
        answered += 1
    new = started_pids(supervisor)
    assert new.keys() == {0, 1} and not set(new.values()) & set(old.values()), (old, new)
    assert answered > 10
    await eventually(lambda: not any(alive(p) for p in old.values()), 10, "old workers gone")
    assert per_worker(await scrape(supervisor), "sse_worker_up") == {"0": 1, "1": 1}


def test_workers_without_a_backplane_on_the_demo_is_exit_2(tmp_path: Path) -> None:
    """--workers 2 for the demo without --backplane: an argparse error saying why, exit 2, nothing started."""
    result = subprocess.run([sys.executable, "-m", "sse_server", "--port", "0", "--workers", "2"],
                            cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "error: --workers 2 needs --backplane redis://" in result.stderr
    assert "each worker would have its own" in result.stderr
    assert "Traceback" not in result.stderr and "started" not in result.stderr


PID_APP = """
import os

from sse_server import App, PlainTextResponse

app = App()


@app.route("/pid")
async def pid(request):
    return PlainTextResponse(str(os.getpid()))
"""


async def test_a_users_app_without_channels_is_served_by_every_worker(tmp_path: Path) -> None:
    """--app with no in-memory channels needs no backplane: both workers answer it, then SIGTERM exits 0."""
    (tmp_path / "pidapp.py").write_text(PID_APP)
    running = await start_cli(tmp_path, "--app", "pidapp:app", "--workers", "2", timeout_s=40)
    try:
        workers = set(started_pids(running).values())
        seen: set[int] = set()
        for _ in range(200):  # each a new connection: the kernel picks the worker
            reply = await exchange(running.host, running.port, get(b"/pid"))
            assert reply.status == 200
            seen.add(int(reply.body))
            if seen == workers:
                break
        assert seen == workers, (seen, workers)
    finally:
        assert await running.stop(signal.SIGTERM) == 0


def test_a_port_in_use_is_exit_1_before_any_worker_starts(tmp_path: Path) -> None:
    """--workers 2 on a port already bound: exit 1 saying so, no worker started."""
    (tmp_path / "pidapp.py").write_text(PID_APP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "sse_server", "--app", "pidapp:app", "--workers", "2",
                                 "--port", str(port)], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                                text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    assert f"error: cannot serve on 127.0.0.1:{port}" in result.stderr
    assert "started" not in result.stderr and "Traceback" not in result.stderr


FLAKY_APP = """
from pathlib import Path

from sse_server import App, PlainTextResponse

app = App()


async def refuse_when_told():
    if Path("broken").exists():
        raise SystemExit("told to fail at start-up")


app.on_startup.append(refuse_when_told)


@app.route("/")
async def index(request):
    return PlainTextResponse("ok")
"""


async def test_a_worker_failing_at_start_up_is_retried_with_a_growing_delay(tmp_path: Path) -> None:
    """A dead worker whose restarts fail at start-up is retried after 0.5 s, 1 s, 2 s (no restart loop),
    and meanwhile the other worker answers every new connection."""
    (tmp_path / "flaky.py").write_text(FLAKY_APP)
    running = await start_cli(tmp_path, "--app", "flaky:app", "--workers", "2", timeout_s=40)
    try:
        (tmp_path / "broken").touch()
        os.kill(started_pids(running)[0], signal.SIGKILL)

        def delays() -> list[str]:
            return re.findall(r"starting worker 0 again in ([\d.]+) s", "".join(running.lines))

        await eventually(lambda: len(delays()) >= 3, 20, "three restarts")
        assert delays()[:3] == ["0.5", "1.0", "2.0"]
        assert "".join(running.lines).count("exited before it was ready") >= 2
        assert "worker 0 cannot start; the other workers take its share" in "".join(running.lines)
        for _ in range(10):  # new connections: none waits on the broken worker's socket
            async with asyncio.timeout(3):
                reply = await exchange(running.host, running.port, get(b"/"))
            assert reply.status == 200
    finally:
        assert await running.stop(signal.SIGTERM) == 0


async def test_a_job_is_followed_and_cancelled_from_whichever_worker_a_connection_lands_on(
    tmp_path: Path, redis: RedisServer,
) -> None:
    """A /chat/streams job started through one connection is followed from its first event by
    readers on both workers and cancelled through yet another connection: every reader gets the
    same events, each once, ending with the cancel's ``done``."""
    running = await start_cli(tmp_path, "--workers", "2", "--backplane", redis.url, "--shutdown-timeout", "2",
                              "--model-tokens-per-s", "20", timeout_s=40)
    readers: list[Reader] = []
    try:
        body = json.dumps({"messages": [{"role": "user", "content": "tell me about streams"}]}).encode()
        started = await exchange(running.host, running.port, req(
            b"POST /chat/streams HTTP/1.1", b"Host: t", b"Content-Type: application/json",
            b"Prefer: respond-async", f"Content-Length: {len(body)}".encode(), body=body))
        assert started.status == 202, started
        job_id = json.loads(started.body)["id"]
        # New connections spread over the workers by address hash: open readers until both
        # workers hold some (each connection is counted by the worker it landed on).
        for _ in range(40):
            client = await SSEClient.connect(running.port, f"/chat/streams/{job_id}")
            assert client.reply.status == 200, client.reply
            readers.append(Reader(client))
            if len(readers) >= 4:
                connections = per_worker(await scrape(running), "sse_connections")
                if len(connections) == 2 and min(connections.values()) >= 2:  # a reader besides the scrape
                    break
        else:
            raise AssertionError(f"40 connections, all on one worker: {connections}")
        cancelled = await exchange(running.host, running.port, req(
            f"POST /chat/streams/{job_id}/cancel HTTP/1.1".encode(), b"Host: t", b"Content-Length: 0"))
        assert cancelled.status == 200 and json.loads(cancelled.body)["state"] == "cancelled", cancelled
        async with asyncio.timeout(15):
            await asyncio.gather(*(r.ended.wait() for r in readers))
        first = [(e.id, e.event, e.data) for e in readers[0].events]
        assert first[0][1] == "start" and first[-1][1] == "done" and '"cancelled"' in first[-1][2], first
        assert len({event_id for event_id, _, _ in first}) == len(first), "an event came twice"
        for reader in readers[1:]:
            assert [(e.id, e.event, e.data) for e in reader.events] == first
    finally:
        await asyncio.gather(*(r.close() for r in readers))
        assert await running.stop() == 0, running.lines
