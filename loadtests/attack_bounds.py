"""Rerun the memory and descriptor rows of an attack on sse_server, as one anonymous client.

    python loadtests/attack_bounds.py [--rows 1,2,3] [--server-cpu 0 --load-cpu 1]

Each row starts a fresh ``python -m sse_server`` (default settings unless the row
says otherwise) pinned to one CPU, attacks it from this process on the other CPU,
and reports what the server answered and what it cost: RSS before / peak / after
(VmRSS from /proc), and the worst latency of ``GET /healthz`` asked on a fresh
connection every 100 ms by a thread of its own, so a server that stops answering
shows up as a slow or hung probe rather than as a stalled attack.

Strategy: every attack is a bounded loop (a fixed count of requests or sockets, each
wait under a timeout) against 127.0.0.1 only. "Stalled" clients are plain sockets
with a tiny SO_RCVBUF that are never read: the server's kernel send buffer fills,
then its user-space write buffer, which is what the limits under test must bound.
RSS counts user-space memory only; the kernel's socket buffers are reported apart,
from /proc/net/sockstat (TCP pages, machine-wide; nothing else runs on loopback here).

The rows and what each expects of the server:

1. 40 publishes of 1 MB of newlines: 413 each (6 MB encoded > --max-event-bytes).
   Then 200 legal publishes of 900 KB across 40 channels: history is bounded in
   bytes, so RSS plateaus.
2. 20 subscribers resume from <epoch>-0 of a channel holding ~1,000 events of 8 KB
   and never read: each costs about its socket buffers, not the backlog.
3. 10,050 channels made by publishing: the oldest are forgotten, ids are never
   reused, and a resume from a forgotten channel's id gets ``SSE-Reset: evicted``.
4. 400 connections to a server started with 256 descriptors: it caps connections
   below that, answers 503 with Retry-After beyond, /healthz never hangs, the log
   stays short.
5. 50 /firehose readers that stop reading, --write-timeout 3: dropped after 3 s.
6. The worst case: history filled to its total bound plus up to 2,000 stalled
   subscribers pinned at their buffer budget; the RSS reached and its arithmetic.

Prints a markdown table; exit status 1 if any row missed its expectation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from benchlib import (
    HOST,
    OUR_SERVER,
    HttpConnection,
    ServerFailed,
    ServerProcess,
    StreamClient,
    cpu_seconds,
    exit_on_sigterm,
    pin_self,
    raise_nofile_limit,
    rss_kib,
    settled,
)

KIB = 1024
MIB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")

# The server's defaults this script reasons with (sse_server/config.py).
MAX_EVENT_BYTES = 1 * MIB
HISTORY_BYTES = 8 * MIB  # per channel; an event costs 2 x encoded + 200
HISTORY_TOTAL_BYTES = 128 * MIB
SUBSCRIBER_BUDGET_BYTES = 1 * MIB  # --max-subscriber-buffer-bytes
STREAM_SNDBUF_BYTES = 256 * KIB  # --stream-send-buffer-bytes; the kernel books twice that
WRITE_HIGH_WATER_BYTES = 64 * KIB  # asyncio's transport default, where a producer waits
MAX_CONNECTIONS = 15_000
MAX_CHANNELS = 10_000

QUICK_MS = 1000  # a /healthz slower than this is not "prompt", even if it answers
STALLED_RCVBUF = 4096  # the client's receive buffer: the kernel rounds it up to a few KiB


# ------------------------------------------------------------------------ measuring


@dataclass
class Row:
    """One line of the final table."""

    name: str
    sent: str
    answer: str = "-"
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    rss_after_kib: int = 0
    health_worst_ms: float = float("nan")
    ok: bool = False
    notes: list[str] = field(default_factory=list)


class Monitor:
    """A thread that samples the server's RSS and times GET /healthz, each every interval.

    Every probe is a fresh connection (``Connection: close``), as a load balancer's
    would be; one that gets no status line within probe_timeout_s counts as a hang.
    The thread runs for at most max_s, even if nobody stops it.
    """

    def __init__(self, pid: int, port: int, *, interval_s: float = 0.1, probe_timeout_s: float = 5.0,
                 max_s: float = 300.0) -> None:
        self.pid, self.port = pid, port
        self.interval_s, self.probe_timeout_s, self.max_s = interval_s, probe_timeout_s, max_s
        self.rss_peak_kib = 0
        self.worst_ms = 0.0
        self.statuses: Counter[str] = Counter()
        self.slow = 0  # probes slower than QUICK_MS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def __enter__(self) -> Monitor:
        self.sample_rss()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(self.probe_timeout_s + 1)
        self.sample_rss()

    @property
    def hangs(self) -> int:
        return self.statuses["hang"]

    def sample_rss(self) -> int:
        with contextlib.suppress(ServerFailed, OSError):
            self.rss_peak_kib = max(self.rss_peak_kib, rss_kib(self.pid))
        return self.rss_peak_kib

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.sample_rss()
            status, ms = probe_healthz(self.port, self.probe_timeout_s)
            self.statuses[status] += 1
            self.worst_ms = max(self.worst_ms, ms)
            self.slow += ms >= QUICK_MS
            self._stop.wait(self.interval_s)

    def summary(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))


def probe_healthz(port: int, timeout_s: float) -> tuple[str, float]:
    """("200" / "503" / "reset" / "hang", milliseconds) for one GET /healthz on a new connection."""
    started = time.perf_counter()
    head = b""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            for _ in range(16):  # a status line is 12 bytes; a few reads at most
                piece = s.recv(256)
                head += piece
                if not piece or len(head) >= 12:
                    break
    except TimeoutError:
        return "hang", (time.perf_counter() - started) * 1000
    except OSError:
        return "reset", (time.perf_counter() - started) * 1000
    ms = (time.perf_counter() - started) * 1000
    parts = head.split(b" ", 2)
    return (parts[1].decode("ascii", "replace") if len(parts) > 1 else "closed"), ms


def sockstat_tcp_kib() -> int:
    """Kernel memory of every TCP socket on the machine, KiB (/proc/net/sockstat "mem" pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * PAGE // KIB
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def rss_settled(pid: int) -> int:
    return int(await settled(lambda: rss_kib(pid), tolerance=256, interval_s=0.25, timeout_s=10))


# ------------------------------------------------------------------------ the client


def subscribe_request(channel: str, last_event_id: str | None = None) -> bytes:
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return StreamClient.get(f"/channels/{channel}/events", headers)


async def open_stalled(port: int, request: bytes, count: int, *, timeout_s: float = 5.0) -> list[socket.socket]:
    """`count` sockets with a tiny receive buffer that send `request` and are never read."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            # Before connect, so the window the server sees is small from the start.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
            s.setblocking(False)
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(s, (HOST, port))
                await loop.sock_sendall(s, request)
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def peek(s: socket.socket, size: int = 2048) -> bytes:
    """What has reached the socket, without reading it (the server still sees a stalled peer)."""
    try:
        return s.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:
        return b"(reset)"


async def heads_seen(socks: list[socket.socket], *, timeout_s: float = 2.0) -> list[bytes]:
    """Each socket's first bytes, peeked, once every one has its status line (or timeout_s passed)."""
    heads = [peek(s) for s in socks]
    for _ in range(int(timeout_s / 0.05)):
        if all(len(h) >= 12 for h in heads):
            break
        await asyncio.sleep(0.05)
        heads = [peek(s) for s in socks]
    return heads


async def publish_many(conn: HttpConnection, requests: list[tuple[str, bytes]], *, depth: int = 50
                       ) -> list[tuple[int, bytes]]:
    """POST each (path, body) on one keep-alive connection, `depth` requests in flight."""
    answers: list[tuple[int, bytes]] = []
    for start in range(0, len(requests), depth):
        batch = requests[start:start + depth]
        for path, body in batch:
            conn.send("POST", path, body)
        for _ in batch:
            answers.append(await conn.response())
    return answers


def event_seq(answer_body: bytes) -> tuple[str, int]:
    """(epoch, seq) of the id a publish answered with: ids are ``<epoch>-<seq>``."""
    event_id = json.loads(answer_body)["id"]
    epoch, _, seq = event_id.rpartition("-")
    return epoch, int(seq)


class HeadClient(StreamClient):
    """A StreamClient that keeps its raw response head (for Retry-After and SSE-Reset)."""

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self.raw_head = b""

    def data_received(self, data: bytes) -> None:
        if not self.head.done() and len(self.raw_head) < 8192:
            self.raw_head += data[:8192]
        super().data_received(data)


async def open_heads(port: int, request: bytes, count: int, *, concurrency: int = 50, timeout_s: float = 5.0
                     ) -> list[HeadClient]:
    """`count` connections sending `request`, each awaited (bounded) until its head or its end."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> HeadClient:
        async with gate:
            proto = HeadClient(request)
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await loop.create_connection(lambda: proto, HOST, port)
                    await proto.head
            return proto

    return list(await asyncio.gather(*(one() for _ in range(count))))


@contextlib.contextmanager
def server_for(args: argparse.Namespace, *extra: str, template: tuple[str, ...] = OUR_SERVER
               ) -> Iterator[ServerProcess]:
    with ServerProcess("sse_server", template, cpu=args.server_cpu, extra_args=extra) as server:
        yield server


def mib(kib: float) -> float:
    return kib / KIB


# ------------------------------------------------------------------------------ rows


async def row1(args: argparse.Namespace) -> list[Row]:
    flood = Row("1a", "40 x POST 1 MB of `\\n` to one channel")
    legal = Row("1b", "200 x POST 900 KB of `x` across 40 channels")
    with server_for(args) as server:
        pid, port = server.pid, server.port
        flood.rss_before_kib = await rss_settled(pid)
        statuses: Counter[int] = Counter()
        reconnects = 0
        with Monitor(pid, port) as mon:
            body = b"\n" * 1_000_000
            conn = await HttpConnection(port, timeout_s=10).__aenter__()
            try:
                for _ in range(40):
                    try:
                        status, _ = await conn.request("POST", "/channels/flood/events", body)
                    except (ConnectionError, asyncio.IncompleteReadError):
                        await conn.__aexit__(None, None, None)  # the server closed after its answer
                        conn = await HttpConnection(port, timeout_s=10).__aenter__()
                        reconnects += 1
                        status = -1
                    statuses[status] += 1
                    mon.sample_rss()
            finally:
                await conn.__aexit__(None, None, None)
        flood.rss_after_kib = await rss_settled(pid)
        flood.rss_peak_kib = max(mon.rss_peak_kib, flood.rss_after_kib)
        flood.health_worst_ms = mon.worst_ms
        flood.answer = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        if reconnects:
            flood.answer += f" ({reconnects} connections closed by the server)"
        growth = flood.rss_after_kib - flood.rss_before_kib
        flood.ok = statuses[413] == 40 and growth < 8 * KIB and mon.hangs == 0
        flood.notes.append(f"RSS after - before {mib(growth):+.1f} MiB (pass: < 8 MiB; each refused event "
                           f"is built once, 6 MB encoded, then freed); /healthz {mon.summary()}")

        # The legal variant: every event is accepted, history evicts by bytes.
        legal.rss_before_kib = flood.rss_after_kib
        body = b"x" * 900_000
        rss_after: list[int] = []
        statuses = Counter()
        with Monitor(pid, port) as mon:
            async with HttpConnection(port, timeout_s=10) as conn:
                for i in range(200):
                    status, _ = await conn.request("POST", f"/channels/h{i % 40}/events", body)
                    statuses[status] += 1
                    rss_after.append(rss_kib(pid))
                    mon.sample_rss()
        legal.rss_after_kib = await rss_settled(pid)
        legal.rss_peak_kib = max(mon.rss_peak_kib, legal.rss_after_kib)
        legal.health_worst_ms = mon.worst_ms
        legal.answer = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        # 900 KB encodes to ~900 KB and costs ~1.8 MB: 4 fit a channel's 8 MiB, and 40
        # channels x 4 would be 288 MB > 128 MiB, so the total bound decides: 74
        # events, 64 MiB of real bytes (no subscriber, so no framed copies yet).
        cost = 2 * (900_000 + 40) + 200
        held = HISTORY_TOTAL_BYTES // cost
        expected_kib = held * 900_000 // KIB
        second_half = max(rss_after[100:]) - rss_after[99]
        legal.ok = (statuses[202] == 200 and second_half < 16 * KIB and mon.hangs == 0
                    and legal.rss_peak_kib - legal.rss_before_kib < (HISTORY_TOTAL_BYTES + 32 * MIB) // KIB)
        legal.answer += f"; plateau: RSS after publish 100 -> 200 {mib(second_half):+.1f} MiB"
        legal.notes.append(
            f"history can hold {held} such events ({mib(expected_kib):.0f} MiB of bytes) under the 128 MiB "
            f"total; RSS growth {mib(legal.rss_peak_kib - legal.rss_before_kib):.1f} MiB at peak; RSS after "
            f"publish 50/100/150/200: " + " / ".join(f"{mib(rss_after[i]):.0f}" for i in (49, 99, 149, 199))
            + " MiB (pass: publishes 101-200 add < 16 MiB, peak growth < 160 MiB)")
    return [flood, legal]


async def row2(args: argparse.Namespace) -> list[Row]:
    n = args.resumers
    row = Row("2", f"~1,000 x 8 KB into one channel, then {n} resumers from `<epoch>-0`, SO_RCVBUF "
                   f"{STALLED_RCVBUF} B, never read")
    with server_for(args) as server:
        pid, port = server.pid, server.port
        async with HttpConnection(port, timeout_s=10) as conn:
            answers = await publish_many(conn, [("/channels/backlog/events", b"x" * 8000)] * 1000)
        if any(status != 202 for status, _ in answers):
            row.answer = f"fill failed: {Counter(s for s, _ in answers)}"
            return [row]
        epoch, last_seq = event_seq(answers[-1][1])
        # An event of 8 KB costs ~16 KB: the channel's 8 MiB keeps ~520 of the 1,000.
        kept = min(1000, HISTORY_BYTES // (2 * 8040 + 200))
        row.rss_before_kib = await rss_settled(pid)
        kernel_before = sockstat_tcp_kib()
        with Monitor(pid, port) as mon:
            started = time.monotonic()
            socks = await open_stalled(port, subscribe_request("backlog", f"{epoch}-0"), n)
            try:
                rss_open = await rss_settled(pid)  # well inside the 30 s write timeout
                kernel_open = sockstat_tcp_kib()
                elapsed = time.monotonic() - started
                heads = await heads_seen(socks)
                alive = server.alive()
            finally:
                close_all(socks)
        row.rss_after_kib = await rss_settled(pid)
        row.rss_peak_kib = max(mon.rss_peak_kib, rss_open)
        row.health_worst_ms = mon.worst_ms
        ok_heads = sum(1 for h in heads if h.startswith(b"HTTP/1.1 200"))
        resets = sum(1 for h in heads if b"\r\nsse-reset: evicted" in h.lower())
        per_rss = (rss_open - row.rss_before_kib) / n
        per_kernel = (kernel_open - kernel_before) / n
        backlog_kib = kept * 8040 / KIB
        row.answer = (f"{ok_heads}/{n} got 200 ({resets} with SSE-Reset: evicted, history keeps ~{kept} of the "
                      f"1,000); RSS {per_rss:.0f} KiB + kernel {per_kernel:.0f} KiB per stalled resumer "
                      f"(the backlog is {backlog_kib:,.0f} KiB)")
        # Expected: the user-space write buffer stops at the transport's high-water mark
        # plus one event, the kernel at its send buffer (which the kernel books twice).
        rss_bound = WRITE_HIGH_WATER_BYTES / KIB + 8 + 64  # + one event + the connection's objects
        kernel_bound = 2 * STREAM_SNDBUF_BYTES / KIB + 64
        row.ok = (ok_heads == n and alive and mon.hangs == 0 and per_rss < rss_bound
                  and per_kernel < kernel_bound and per_rss + per_kernel < backlog_kib / 4)
        row.notes.append(
            f"epoch {epoch}, last seq {last_seq}; measured {elapsed:.1f} s after opening (write timeout 30 s); "
            f"pass: RSS per resumer < {rss_bound:.0f} KiB (64 KiB high-water + one event + 64 KiB), kernel < "
            f"{kernel_bound:.0f} KiB (256 KiB SO_SNDBUF, booked x2, + 64 KiB); /healthz {mon.summary()}")
    return [row]


async def row3(args: argparse.Namespace) -> list[Row]:
    count = MAX_CHANNELS + 50
    row = Row("3", f"publish 1 event to each of c0..c{count - 1}, then to `news`, then resume from the old "
                   f"`news` id")
    with server_for(args) as server:
        pid, port = server.pid, server.port
        row.rss_before_kib = await rss_settled(pid)
        with Monitor(pid, port) as mon:
            async with HttpConnection(port, timeout_s=10) as conn:
                first = await conn.request("POST", "/channels/news/events", b"old")
                answers = await publish_many(conn, [(f"/channels/c{i}/events", b"e") for i in range(count)])
                again = await conn.request("POST", "/channels/news/events", b"new")
            all_answers = [first, *answers, again]
            statuses = Counter(s for s, _ in all_answers)
            ok_publish = statuses[202] == len(all_answers)
            seqs = [event_seq(body)[1] for s, body in all_answers if s == 202]
            increasing = all(b > a for a, b in zip(seqs, seqs[1:], strict=False))
            old_id = json.loads(first[1])["id"] if first[0] == 202 else ""
            new_id = json.loads(again[1])["id"] if again[0] == 202 else ""
            (resume,) = await open_heads(port, subscribe_request("news", old_id), 1)
            if resume.transport is not None:
                resume.transport.close()
        row.rss_after_kib = await rss_settled(pid)
        row.rss_peak_kib = max(mon.rss_peak_kib, row.rss_after_kib)
        row.health_worst_ms = mon.worst_ms
        reset = re.search(rb"\r\nsse-reset: *([^\r]*)", resume.raw_head.lower())
        reset_value = reset.group(1).decode() if reset else "(none)"
        row.answer = (f"{statuses[202]:,}/{len(all_answers):,} x 202; {len(set(seqs)):,} distinct ids, "
                      f"{'strictly increasing' if increasing else 'NOT increasing'}; `news` {old_id} -> {new_id}; "
                      f"resume: {resume.status}, SSE-Reset: {reset_value}")
        row.ok = (ok_publish and increasing and len(set(seqs)) == len(seqs) and old_id != new_id
                  and resume.status == 200 and reset_value == "evicted" and mon.hangs == 0)
        row.notes.append(f"--max-channels {MAX_CHANNELS:,}: the {count - MAX_CHANNELS} least recently used "
                         f"channels (`news` first) were forgotten; /healthz {mon.summary()}")
    return [row]


async def burst(port: int, request: bytes, count: int, *, timeout_s: float = 5.0) -> Counter[str]:
    """`count` connections started in one loop iteration; the status line each got (or "hang" / "reset")."""
    loop = asyncio.get_running_loop()

    async def one() -> str:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(s, (HOST, port))
                await loop.sock_sendall(s, request)
                head = await loop.sock_recv(s, 1024)
        except TimeoutError:
            return "hang"
        except OSError:
            return "reset"
        finally:
            s.close()
        if not head.startswith(b"HTTP/1.1 "):
            return "closed"
        status = head[9:12].decode("ascii", "replace")
        return f"{status}+Retry-After" if b"\r\nretry-after:" in head.lower() else status

    return Counter(await asyncio.gather(*(one() for _ in range(count))))


async def row4(args: argparse.Namespace) -> list[Row]:
    nofile, count, bursts, hold_s = 256, 400, 10, 15.0
    row = Row("4", f"{count} SSE connections to a server with `ulimit -n {nofile}`, held {hold_s:.0f} s; meanwhile "
                   f"{bursts} bursts of the connections past the cap, all started at once")
    if shutil.which("prlimit"):
        limited = ("prlimit", f"--nofile={nofile}:{nofile}", "--", *OUR_SERVER)
        how = f"prlimit --nofile={nofile}:{nofile}"
    else:
        limited = ("bash", "-c", f'ulimit -n {nofile}; exec "$@"', "bash", *OUR_SERVER)
        how = f"bash -c 'ulimit -n {nofile}; exec ...'"
    with server_for(args, template=limited) as server:
        pid, port = server.pid, server.port
        row.rss_before_kib = await rss_settled(pid)
        slow: list[float] = []
        cpu_before = cpu_seconds(pid)
        with Monitor(pid, port) as mon:
            held_since = time.monotonic()
            clients = await open_heads(port, subscribe_request("r4"), count, concurrency=50)
            statuses = Counter(c.status for c in clients)
            retry_after = sum(1 for c in clients if c.status == 503 and b"\r\nretry-after:" in c.raw_head.lower())
            fds_held = open_fds(pid)
            # Past the cap every connection is accepted only to be told 503: a burst of
            # them needs that many descriptors at once, on top of the connections held.
            extra = max(1, count - statuses[200])
            burst_statuses: Counter[str] = Counter()
            for _ in range(bursts):
                burst_statuses += await burst(port, subscribe_request("r4"), extra)
                slow.append(mon.worst_ms)
                await asyncio.sleep(0.3)  # a few /healthz probes between bursts
            # The rest of the window in which the old server logged 143,313 tracebacks.
            await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - held_since)))
            cpu_pct = 100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - held_since)
            held = sum(1 for c in clients if c.status == 200 and not c.closed.done())
            for c in clients:
                if c.transport is not None:
                    c.transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*(c.closed for c in clients if c.transport is not None))
            await asyncio.sleep(0.5)
            after_status, after_ms = probe_healthz(port, 5.0)
        row.rss_after_kib = await rss_settled(pid)
        row.rss_peak_kib = max(mon.rss_peak_kib, row.rss_after_kib)
        row.health_worst_ms = max(mon.worst_ms, after_ms)
        log = server.log_text()
    lines = log.splitlines()
    cap_match = re.search(r"serving at most (\d+) connections", log)
    cap = int(cap_match.group(1)) if cap_match else None
    emfile = sum(1 for line in lines if "out of file descriptors" in line)
    failed = emfile + sum(int(m) for m in re.findall(r"; (\d+) such errors since the last report", log))
    burst_text = ", ".join(f"{n} x {k}" for k, n in sorted(burst_statuses.items()))
    row.answer = (f"log says cap {cap}; {statuses[200]} x 200 (held {held} for {hold_s:.0f} s), "
                  f"{statuses[503]} x 503 ({retry_after} with Retry-After), {statuses[0]} without an answer; "
                  f"bursts: {burst_text}; /healthz while full: {mon.summary()}, {mon.slow} over {QUICK_MS} ms; "
                  f"after: {after_status}; server log {len(lines)} lines ({emfile} out-of-descriptors reports"
                  f"{', ' + format(failed, ',') + ' failed accepts counted in them' if failed else ''}); "
                  f"server CPU {cpu_pct:.0f}% of a core over the {hold_s:.0f} s")
    refused = sum(n for k, n in burst_statuses.items() if k == "503+Retry-After")
    row.ok = (cap is not None and cap < nofile and statuses[200] <= cap and statuses[200] + statuses[503] == count
              and retry_after == statuses[503] and refused == bursts * extra and mon.hangs == 0
              and after_status == "200" and len(lines) < 50 and row.health_worst_ms < QUICK_MS)
    row.notes.append(f"started with {how}; {fds_held} descriptors open once full; pass: cap < {nofile}, every "
                     f"other connection 503 + Retry-After, /healthz never hangs and answers within {QUICK_MS} ms, "
                     f"log < 50 lines; worst /healthz so far, after each burst (ms): "
                     + ", ".join(f"{ms:.0f}" for ms in slow)
                     + f"; the log: {' | '.join(line[:200] for line in lines[:4])}")
    return [row]


async def row5(args: argparse.Namespace) -> list[Row]:
    n, timeout_s, waves = 50, 3.0, 6
    row = Row("5", f"{waves} waves of {n} x GET /firehose?n=10000000&size=1024, SO_RCVBUF {STALLED_RCVBUF} B, "
                   f"never read; server run with --write-timeout {timeout_s:g}")
    with server_for(args, "--write-timeout", f"{timeout_s:g}") as server:
        pid, port = server.pid, server.port
        row.rss_before_kib = await rss_settled(pid)
        fds_before = open_fds(pid)
        heads: list[int] = []
        dropped_after: list[float | None] = []
        peaks: list[int] = []
        fds_peak = fds_before
        with Monitor(pid, port) as mon:
            for _ in range(waves):  # repeated waves tell memory reused from memory kept
                socks = await open_stalled(port, StreamClient.get("/firehose?n=10000000&size=1024"), n)
                opened = time.monotonic()
                try:
                    seen = await heads_seen(socks)
                    heads.append(sum(1 for h in seen if h.startswith(b"HTTP/1.1 200")))
                    dropped = None
                    for _ in range(int((timeout_s + 15) / 0.1)):  # bounded: write timeout + 15 s
                        fds = open_fds(pid)
                        fds_peak = max(fds_peak, fds)
                        if fds <= fds_before + 1:  # +1: a /healthz probe may be in flight
                            dropped = time.monotonic() - opened
                            break
                        mon.sample_rss()
                        await asyncio.sleep(0.1)
                    dropped_after.append(dropped)
                finally:
                    close_all(socks)
                peaks.append(mon.sample_rss())
        row.rss_after_kib = await rss_settled(pid)
        row.rss_peak_kib = mon.rss_peak_kib
        row.health_worst_ms = mon.worst_ms
    all_dropped = all(d is not None for d in dropped_after)
    times = " / ".join(f"{d:.1f} s" if d is not None else "never" for d in dropped_after)
    row.answer = (f"{' / '.join(f'{h}/{n}' for h in heads)} got 200; dropped {times} after the last of each wave "
                  f"opened (server descriptors {fds_before} -> {fds_peak} -> {fds_before})")
    growth = peaks[0] - row.rss_before_kib
    last = peaks[-1] - peaks[-2]
    kept = row.rss_after_kib - row.rss_before_kib
    row.ok = (all_dropped and max(d or 0 for d in dropped_after) < timeout_s + 3 and mon.hangs == 0
              and sum(heads) == waves * n and last < KIB)
    row.notes.append(f"RSS growth {growth:,} KiB in the first wave; RSS after each wave "
                     + " / ".join(f"{mib(p):.1f}" for p in peaks) + f" MiB; {kept:+,} KiB left after all (pass: "
                     f"every reader dropped within write timeout + 3 s, and the last wave adds < 1 MiB: freed "
                     f"buffers are reused, not leaked); /healthz {mon.summary()}")
    return [row]


async def row6(args: argparse.Namespace) -> list[Row]:
    n, per_channel = args.worst_connections, 50
    channels = max(1, n // per_channel)
    n = channels * per_channel
    row = Row("6", f"{n} stalled subscribers on {channels} channels, each pushed to its 1 MiB budget plus one "
                   f"1 MiB event; the channels' history fills the 128 MiB total")
    small = 64 * KIB - 64  # encoded just under 64 KiB
    big = MAX_EVENT_BYTES - 64  # the largest body that encodes under --max-event-bytes
    with server_for(args) as server:
        pid, port = server.pid, server.port
        row.rss_before_kib = await rss_settled(pid)
        kernel_before = sockstat_tcp_kib()
        fds_before = open_fds(pid)
        started = time.monotonic()
        with Monitor(pid, port, max_s=120) as mon:
            async with HttpConnection(port, timeout_s=30) as conn:
                # A canary measures where the budget bites: 64 KiB steps until it is dropped.
                # Every stalled socket behaves alike on loopback, so all stop at the same step.
                canary = await open_stalled(port, subscribe_request("canary"), 1)
                await conn.request("POST", "/channels/canary/events", b".")  # its head is out
                drop_step = None
                for step in range(1, 65):  # 64 x 64 KiB = 4 MiB: far past any 1 MiB budget
                    status, body = await conn.request("POST", "/channels/canary/events", b"x" * small)
                    if status != 202:
                        break
                    if json.loads(body)["subscribers"] == 0:
                        drop_step = step
                        break
                close_all(canary)
                if drop_step is None or drop_step < 2:
                    row.answer = f"the canary was not dropped within 64 steps of 64 KiB ({drop_step})"
                    return [row]
                socks: list[socket.socket] = []
                try:
                    for c in range(channels):
                        socks += await open_stalled(port, subscribe_request(f"pin{c}"), per_channel)
                    subscribed = 0
                    for c in range(channels):  # a small event proves every head is out
                        _, body = await conn.request("POST", f"/channels/pin{c}/events", b".")
                        subscribed += json.loads(body)["subscribers"]
                    # drop_step - 2 small steps leave each at or under its budget; then one
                    # event of the largest size still fits (the event being written is not counted).
                    plan = [b"x" * small] * (drop_step - 2) + [b"x" * big]
                    counts: list[int] = []
                    for payload in plan:
                        counts = []
                        for c in range(channels):
                            status, body = await conn.request("POST", f"/channels/pin{c}/events", payload)
                            counts.append(json.loads(body)["subscribers"] if status == 202 else -status)
                        mon.sample_rss()
                    pinned = sum(counts)
                    rss_pinned = await settled(lambda: rss_kib(pid), tolerance=1024, interval_s=0.25, timeout_s=5)
                    kernel_pinned = sockstat_tcp_kib()
                    mon.sample_rss()
                    pinned_at = time.monotonic() - started
                    # Then wait (bounded) for the write timeout to drop them all.
                    for _ in range(int(45 / 0.25)):  # bounded: the 30 s write timeout + 15 s
                        if open_fds(pid) <= fds_before + 1:  # +1: a /healthz probe may be in flight
                            break
                        await asyncio.sleep(0.25)
                    dropped_at = time.monotonic() - started
                    fds_left = open_fds(pid)
                finally:
                    close_all(socks)
        row.rss_after_kib = await rss_settled(pid)
        row.rss_peak_kib = mon.rss_peak_kib
        row.health_worst_ms = mon.worst_ms
    per_sub_kib = (int(rss_pinned) - row.rss_before_kib - HISTORY_TOTAL_BYTES // KIB) / max(1, pinned)
    kernel_per_sub = (kernel_pinned - kernel_before) / max(1, n)
    # The bound: history's total (counted as bytes + framed copy, both real once a
    # subscriber was sent the event) + per subscriber its budget + the one event the
    # check lets through + the transport's overallocation and the connection's objects.
    per_sub_bound = SUBSCRIBER_BUDGET_BYTES + MAX_EVENT_BYTES + 128 * KIB
    bound_kib = (HISTORY_TOTAL_BYTES + n * per_sub_bound) // KIB
    theory_gib = (HISTORY_TOTAL_BYTES + MAX_CONNECTIONS * per_sub_bound) / 2**30
    theory_kernel_gib = MAX_CONNECTIONS * 2 * STREAM_SNDBUF_BYTES / 2**30
    row.answer = (f"canary dropped at step {drop_step} (64 KiB steps); {subscribed}/{n} subscribed, {pinned}/{n} "
                  f"still pinned after {drop_step - 2} x 64 KiB + 1 x 1 MiB; RSS {mib(rss_pinned):,.0f} MiB at "
                  f"{pinned_at:.0f} s: ~{per_sub_kib:,.0f} KiB per subscriber beyond 128 MiB of history, kernel "
                  f"{kernel_per_sub:,.0f} KiB each; all dropped by {dropped_at:.0f} s ({fds_left} fds left)")
    row.ok = (pinned == n and row.rss_peak_kib - row.rss_before_kib <= bound_kib and mon.hangs == 0
              and fds_left <= fds_before + 1)
    row.notes.append(
        f"bound: 128 MiB history + {n} x (1 MiB budget + 1 MiB event + 128 KiB) = {mib(bound_kib):,.0f} MiB "
        f"user space, + {n} x 512 KiB kernel send buffer = {n * 2 * STREAM_SNDBUF_BYTES / MIB:,.0f} MiB; "
        f"at the default --max-connections {MAX_CONNECTIONS:,}: {theory_gib:,.1f} GiB + {theory_kernel_gib:.1f} "
        f"GiB kernel; /healthz {mon.summary()}")
    return [row]


ROWS = {1: row1, 2: row2, 3: row3, 4: row4, 5: row5, 6: row6}


# ---------------------------------------------------------------------------- report


def table(rows: list[Row]) -> str:
    headers = ["row", "what was sent", "bounded answer seen", "RSS before MiB", "RSS peak MiB", "RSS after MiB",
               "worst /healthz ms", "pass"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [r.name, r.sent, r.answer, f"{mib(r.rss_before_kib):.1f}", f"{mib(r.rss_peak_kib):.1f}",
                 f"{mib(r.rss_after_kib):.1f}", f"{r.health_worst_ms:.1f}", "pass" if r.ok else "FAIL"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def parse_rows(text: str) -> list[int]:
    try:
        wanted = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rows wants numbers like 1,2,3, got {text!r}") from None
    unknown = [r for r in wanted if r not in ROWS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"rows are 1..{len(ROWS)}, got {text!r}")
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=parse_rows, default=list(ROWS), help="rows to run, e.g. 1,2,3 (default all)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--resumers", type=int, default=20, help="row 2: stalled resumers")
    parser.add_argument("--worst-connections", type=int, default=2000,
                        help="row 6: stalled subscribers (rounded down to 50 per channel; at most 2,000)")
    args = parser.parse_args()
    if not 50 <= args.worst_connections <= 2000:
        parser.error("--worst-connections must be between 50 and 2000")
    exit_on_sigterm()
    raise_nofile_limit(args.worst_connections + 1024)
    pin_self(args.load_cpu)
    results: list[Row] = []
    for number in args.rows:
        print(f"row {number} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            rows = asyncio.run(ROWS[number](args))
        except (ServerFailed, OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            rows = [Row(str(number), "-", f"the row could not run: {type(e).__name__}: {e}")]
        for r in rows:
            print(f"  row {r.name}: {'pass' if r.ok else 'FAIL'} in {time.monotonic() - started:.0f} s; "
                  f"{r.answer}", file=sys.stderr, flush=True)
            for note in r.notes:
                print(f"    {note}", file=sys.stderr, flush=True)
        results += rows
    print(table(results))
    print()
    for r in results:
        for note in r.notes:
            print(f"- row {r.name}: {note}")
    failed = [r.name for r in results if not r.ok]
    print("\nFAIL: rows " + ", ".join(failed) if failed else "\nPASS")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
