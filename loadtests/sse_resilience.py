"""Resilience runs for the SSE channels: churning subscribers and a frozen reader.

    python loadtests/sse_resilience.py churn  [--subscribers 50 --events 2000]
    python loadtests/sse_resilience.py frozen [--readers 1000 --seconds 60 --rate 20]

churn: subscribers disconnect at random (half with a reset, half with FIN) and
reconnect with Last-Event-ID while sequenced events are published; every
subscriber must end with each event exactly once, in order.

frozen: one subscriber with a tiny receive buffer stops reading for the whole
run while the others read at full speed. The server must cut the frozen one off
at its byte budget, its RSS must stay flat, and the others' publish-to-receive
latency must not move between the first and the last window of the run.

The server runs pinned to CPU 0, this client to CPU 1. Exit status 0 means every
check held; the figures are printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import socket
import sys
import time

from benchlib import (
    HOST,
    OUR_SERVER,
    Column,
    HttpConnection,
    ServerProcess,
    StreamClient,
    markdown_table,
    percentile,
    pin_self,
    raise_nofile_limit,
    rss_kib,
)

from sse_server.sse import EventStreamParser


class Subscriber(StreamClient):
    """Parses events with the WHATWG parser; records data, ids and latency."""

    def __init__(self, request: bytes, sink: list, latencies: list[float] | None = None) -> None:
        super().__init__(request)
        self.parser = EventStreamParser()
        self.sink = sink  # (seq, id) pairs, shared across this subscriber's reconnects
        self.latencies = latencies

    def body_received(self, data: bytes) -> None:
        now = time.time_ns()
        for event in self.parser.feed(data):
            seq_text, _, sent = event.data.partition("\n")[0].partition(":")
            self.sink.append((int(seq_text), event.id))
            if self.latencies is not None and sent:
                self.latencies.append((now - int(sent)) / 1e6)


def subscribe_request(channel: str, last_id: str | None) -> bytes:
    headers = {"Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    return StreamClient.get(f"/channels/{channel}/events", headers)


async def connect(port: int, factory, rcvbuf: int | None = None) -> Subscriber:
    loop = asyncio.get_running_loop()
    sock = None
    if rcvbuf is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, port))
        _, proto = await loop.create_connection(factory, sock=sock)
    else:
        _, proto = await loop.create_connection(factory, HOST, port)
    async with asyncio.timeout(10):
        if await proto.head != 200:
            raise RuntimeError(f"subscribe failed with status {proto.status}")
    return proto


async def run_churn(port: int, subscribers: int, events: int, seconds_cap: float) -> bool:
    seen: list[list[tuple[int, str]]] = [[] for _ in range(subscribers)]
    ready = asyncio.Event()
    joined = 0
    reconnects = 0

    async def subscriber(i: int) -> None:
        nonlocal joined, reconnects
        rng = random.Random(i)
        mine = seen[i]
        first = True
        while not mine or mine[-1][0] != events - 1:
            last_id = mine[-1][1] if mine else None
            proto = await connect(port, lambda last_id=last_id: Subscriber(subscribe_request("churn", last_id), mine))
            if first:
                joined += 1
                first = False
                if joined == subscribers:
                    ready.set()
            await asyncio.sleep(rng.uniform(0.01, 0.3))
            if rng.random() < 0.5:
                proto.transport.abort()  # vanish with a reset
            else:
                proto.transport.close()
            await proto.closed
            reconnects += 1

    async def publisher() -> None:
        await ready.wait()
        async with HttpConnection(port) as conn:
            for seq in range(events):
                status, _ = await conn.request("POST", "/channels/churn/events", str(seq).encode())
                if status != 202:
                    raise RuntimeError(f"publish answered {status}")
                if seq % 50 == 0:
                    await asyncio.sleep(0.01)

    started = time.monotonic()
    async with asyncio.timeout(seconds_cap):
        await asyncio.gather(publisher(), *(subscriber(i) for i in range(subscribers)))
    elapsed = time.monotonic() - started
    exact = sum(1 for s in seen if [seq for seq, _ in s] == list(range(events)))
    row = {"subscribers": subscribers, "events": events, "reconnects": reconnects,
           "exact": f"{exact}/{subscribers}", "seconds": elapsed}
    print(markdown_table({"sse_server": row}, [
        Column("subscribers", "subscribers", "{:d}"), Column("events", "events", "{:d}"),
        Column("reconnects", "reconnects", "{:d}"), Column("exact", "exactly once, in order"),
        Column("seconds", "seconds"),
    ], baseline=None))
    return exact == subscribers


async def run_frozen(port: int, pid: int, readers: int, seconds: float, rate: float, size: int) -> bool:
    latencies: list[float] = []
    sinks: list[list] = []
    clients = []
    for _ in range(readers):
        sink: list = []
        sinks.append(sink)
        clients.append(await connect(port, lambda s=sink: Subscriber(subscribe_request("frozen", None), s, latencies)))
    frozen_sink: list = []
    frozen = await connect(port, lambda: _Frozen(subscribe_request("frozen", None), frozen_sink), rcvbuf=4096)
    rss_start = rss_kib(pid)
    windows: list[list[float]] = []
    rss_samples = []
    padding = "x" * size
    started = time.monotonic()
    seq = 0
    async with HttpConnection(port) as conn:
        while time.monotonic() - started < seconds:
            window_start = len(latencies)
            tick = time.monotonic()
            while time.monotonic() - tick < 1.0:
                body = f"{seq}:{time.time_ns()}\n{padding}".encode()
                # data holds "seq:ns" on its first line; the padding is a second line
                status, _ = await conn.request("POST", "/channels/frozen/events", body)
                if status != 202:
                    raise RuntimeError(f"publish answered {status}")
                seq += 1
                await asyncio.sleep(1 / rate)
            windows.append(sorted(latencies[window_start:]))
            rss_samples.append(rss_kib(pid))
    await asyncio.sleep(1.0)
    delivered = sum(len(s) for s in sinks)
    # The frozen reader wakes up: if the server cut it off, it reads what reached
    # its buffers and then finds the connection gone (its events end early).
    frozen.transport.resume_reading()
    try:
        async with asyncio.timeout(10):
            await frozen.closed
    except TimeoutError:
        pass
    frozen_cut = frozen.closed.done() and len(frozen_sink) < seq
    for c in clients:
        c.transport.close()
    first = [x for w in windows[1:4] for x in w]  # skip the warm-up second
    last = [x for w in windows[-3:] for x in w]
    first.sort()
    last.sort()
    p99_first, p99_last = percentile(first, 99), percentile(last, 99)
    rss_growth = max(rss_samples) - rss_samples[0]
    row = {"readers": readers, "events": seq, "delivered": delivered,
           "p50_first": percentile(first, 50), "p99_first": p99_first,
           "p50_last": percentile(last, 50), "p99_last": p99_last,
           "rss_start": rss_start, "rss_growth": rss_growth, "cut": "yes" if frozen_cut else "no"}
    print(markdown_table({"sse_server": row}, [
        Column("readers", "readers", "{:d}"), Column("events", "events", "{:d}"),
        Column("delivered", "delivered", "{:,d}"),
        Column("p50_first", "p50 ms, first 3 s", "{:.2f}"), Column("p99_first", "p99 ms, first 3 s", "{:.2f}"),
        Column("p50_last", "p50 ms, last 3 s", "{:.2f}"), Column("p99_last", "p99 ms, last 3 s", "{:.2f}"),
        Column("rss_start", "RSS at start KiB", "{:,d}"), Column("rss_growth", "RSS max growth KiB", "{:,d}"),
        Column("cut", "frozen reader cut off"),
    ], baseline=None))
    ok = delivered == readers * seq and frozen_cut and p99_last < max(3 * p99_first, p99_first + 20)
    ok = ok and rss_growth < 16 * 1024  # the frozen reader's backlog is capped by the budget
    return ok


class _Frozen(Subscriber):
    """Reads the response head, then stops reading until told to resume."""

    frozen = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head.done() and not self.frozen and self.transport is not None:
            self.frozen = True
            self.transport.pause_reading()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)
    churn = sub.add_parser("churn")
    churn.add_argument("--subscribers", type=int, default=50)
    churn.add_argument("--events", type=int, default=2000)
    churn.add_argument("--cap-seconds", type=float, default=180)
    frozen = sub.add_parser("frozen")
    frozen.add_argument("--readers", type=int, default=1000)
    frozen.add_argument("--seconds", type=float, default=60)
    frozen.add_argument("--rate", type=float, default=20, help="events per second")
    frozen.add_argument("--size", type=int, default=4096, help="bytes of padding per event")
    frozen.add_argument("--budget", type=int, default=256 * 1024,
                        help="the server's --max-subscriber-buffer-bytes: low enough that the run reaches it")
    args = parser.parse_args()
    raise_nofile_limit(4096 + getattr(args, "readers", 0))
    # This client keeps every delivery it saw; collecting that growing heap would
    # pause it for longer and longer and show up as server latency. It is bounded.
    gc.disable()
    pin_self(1)
    extra = ["--max-subscriber-buffer-bytes", str(args.budget)] if args.scenario == "frozen" else []
    with ServerProcess("sse_server", OUR_SERVER, cpu=0, extra_args=extra) as server:
        if args.scenario == "churn":
            ok = asyncio.run(run_churn(server.port, args.subscribers, args.events, args.cap_seconds))
        else:
            ok = asyncio.run(run_frozen(server.port, server.pid, args.readers, args.seconds, args.rate, args.size))
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
