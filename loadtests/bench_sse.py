"""Server-Sent Events cost: idle memory, fan-out CPU and latency, firehose throughput.

Compares sse_server with the idiomatic peers in loadtests/peers/ (uvicorn +
Starlette + sse-starlette, aiohttp + aiohttp-sse), all serving the demo's
HTTP contract. Each server runs pinned to CPU 0 and is started fresh for each
part; this process is the load generator, pinned to CPU 1, and speaks raw
asyncio sockets (benchlib.StreamClient), never an HTTP library.

Parts:
  idle      RSS per idle subscriber. Open a few warm-up subscribers (so one-off
            allocations are not charged to the measured ones), read RSS once it
            settles, open K subscribers to /channels/idle/events, wait for each
            response head and for RSS to settle again: (after - before) / K, KiB.
  fanout    S subscribers on /channels/fan/events; POST "warmup" events until
            the server reports all S subscribed (and they received one), then
            publish E events at R/s, each body being time.time_ns() taken just
            before the POST is written. Subscribers count the data lines and
            record publish-to-receive latency. Reports lost deliveries
            (S*E - received), server CPU (/proc utime+stime delta) per delivery
            in microseconds, p50/p99 latency. CPU per delivery is the primary
            figure; latency includes this single client process's own queueing,
            so it is an upper bound when the client is the bottleneck.
  firehose  One connection to /firehose?n=N&size=B; events/s from request to
            the end of the stream (events counted at blank-line terminators,
            across read boundaries, heartbeat comments excluded), plus server CPU
            per event.
  churn     Waves of B subscribers that connect, get their response head and
            leave; subscribe+leave cycles per second, then the leak check: the
            server's open descriptors and RSS once settled, against before.

Ratios in the table are value / starlette's value (lower is better for KiB and
us, higher for events/s). A server that does not come up is reported and
skipped.

Usage:
    python loadtests/bench_sse.py                                  # defaults below
    python loadtests/bench_sse.py --subscribers 10000 --fanout-subscribers 10000
    python loadtests/bench_sse.py --subscribers 500 --fanout-subscribers 200 --events 20
    python loadtests/bench_sse.py --only sse_server,starlette --skip-idle --skip-firehose

Through the Redis backplane vs in-process, same run (starts a redis-server on the load CPU):
    python loadtests/bench_sse.py --only sse_server --redis --skip-idle --skip-firehose --skip-churn
adds the row ``sse_server+redis``: the same server with ``--backplane``; its
publish-to-receive latency includes the round trip through Redis, and the
difference of the ``us/event`` columns is the server CPU each published event
spends on the engine (the publish script call plus the pub/sub message).

Before/after a change, side by side in one run (``git worktree add ../base <commit>``):
    python loadtests/bench_sse.py --only sse_server --tree base=../base --repeats 3
``--tree NAME=PATH`` adds a server: this repo's sse_server as checked out at PATH.
``--variant NAME=ARGS`` adds this repo's sse_server run with extra flags, and
``--header 'Name: value'`` goes on every subscribe and publish, so the cost of a
feature is one run (every row gets the header; a server without auth ignores it):
    export SSE_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
    python loadtests/bench_sse.py --only sse_server --variant auth='--jwt-secret-env SSE_JWT_SECRET' \
        --header "Authorization: Bearer $(python -m sse_server token --publish '*' --subscribe '*')"
With ``--repeats N`` every part runs N times per server, interleaved, and the
table shows the median of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from benchlib import (
    OUR_SERVER,
    Column,
    CoreMeter,
    DataLineClient,
    HttpConnection,
    ProtocolError,
    RedisProcess,
    ServerDidNotStart,
    ServerFailed,
    ServerProcess,
    SSEEventCounter,
    StreamClient,
    close_clients,
    cpu_seconds,
    exit_on_sigterm,
    markdown_table,
    open_clients,
    parse_headers,
    percentile,
    pin_self,
    raise_nofile_limit,
    require_modules,
    rss_kib,
    select_servers,
    settled,
    variant_server,
    wait_for_count,
    warn_if_shared,
)

SERVERS: dict[str, tuple[str, ...]] = {
    "sse_server": OUR_SERVER,
    "starlette": ("{python}", "{peers}/starlette_app.py", "--port", "{port}"),
    "aiohttp": ("{python}", "{peers}/aiohttp_app.py", "--port", "{port}"),
}
BASELINE = "starlette"

WARM_SUBSCRIBERS = 20  # opened before the RSS baseline: first-use allocations go there
SSE_HEADERS = {"Accept": "text/event-stream"}

Metrics = dict[str, Any]


# ------------------------------------------------------------------------------ idle


async def measure_idle(server: ServerProcess, args: argparse.Namespace) -> Metrics:
    request = StreamClient.get("/channels/idle/events", {**SSE_HEADERS, **args.headers})

    def subscriber() -> StreamClient:
        return StreamClient(request)

    def rss() -> float:
        return rss_kib(server.pid)

    warm, _ = await open_clients(subscriber, WARM_SUBSCRIBERS, server.port)
    before = await settled(rss, tolerance=16)
    clients, failed = await open_clients(
        subscriber, args.subscribers, server.port, timeout_s=args.timeout
    )
    # Settled: within 64 KiB, or 1% of a 2 KiB-per-subscriber growth if larger.
    after = await settled(rss, tolerance=max(64, len(clients) * 0.02))
    await close_clients(warm + clients)
    metrics: Metrics = {"rss_mib": before / 1024}
    if clients:
        metrics["idle_kib"] = (after - before) / len(clients)
    if failed:
        metrics["note"] = f"idle: {failed}/{args.subscribers} subscriptions failed"
    return metrics


# ---------------------------------------------------------------------------- fan-out


@dataclass(slots=True)
class FanoutStats:
    latencies_ns: list[int] = field(default_factory=list)  # one per timestamped delivery
    other: int = 0  # data lines that are not timestamps (the warm-up events)


class FanoutSubscriber(DataLineClient):
    """Counts `data:` lines; a data line holding an integer is a publish timestamp."""

    __slots__ = ("stats",)

    def __init__(self, request: bytes, stats: FanoutStats) -> None:
        super().__init__(request)
        self.stats = stats

    def data_line(self, value: bytes, now_ns: int) -> None:
        try:
            self.stats.latencies_ns.append(now_ns - int(value))  # int() strips " " and "\r"
        except ValueError:
            self.stats.other += 1


async def publish(conn: HttpConnection, path: str, body: bytes) -> int | None:
    """POST one event; the subscriber count the server reports (None if unreadable)."""
    status, payload = await conn.request("POST", path, body)
    if status != 202:
        raise ServerFailed(f"publish answered {status}: {payload[:200]!r}")
    try:
        return int(json.loads(payload)["subscribers"])
    except (ValueError, KeyError, TypeError):
        return None


async def measure_fanout(server: ServerProcess, args: argparse.Namespace) -> Metrics:
    loop = asyncio.get_running_loop()
    path = "/channels/fan/events"
    request = StreamClient.get(path, {**SSE_HEADERS, **args.headers})
    stats = FanoutStats()
    clients, failed = await open_clients(
        lambda: FanoutSubscriber(request, stats),
        args.fanout_subscribers,
        server.port,
        timeout_s=args.timeout,
    )
    notes = [f"fanout: {failed} subscriptions failed"] if failed else []
    subscribers = len(clients)
    try:
        async with HttpConnection(server.port, timeout_s=args.timeout, headers=args.headers) as conn:
            # Some servers answer the SSE head before registering the subscriber:
            # publish warm-up events until every subscriber is counted, and wait
            # until the last one reached all of them.
            seen: int | None = 0
            for _ in range(50):
                seen = await publish(conn, path, b"warmup")
                if seen is None or seen >= subscribers:
                    break
                await asyncio.sleep(0.1)
            if seen is not None and seen < subscribers:
                notes.append(f"fanout: server saw {seen}/{subscribers} subscribers")
            await wait_for_count(
                lambda: stats.other, subscribers, stall_s=3, timeout_s=args.timeout
            )
            await asyncio.sleep(0.2)

            cpu_before = cpu_seconds(server.pid)
            start = loop.time()
            for i in range(args.events):
                await asyncio.sleep(max(0.0, start + i / args.rate - loop.time()))
                await publish(conn, path, str(time.time_ns()).encode())
            expected = args.events * subscribers
            await wait_for_count(
                lambda: len(stats.latencies_ns), expected, stall_s=5, timeout_s=args.timeout
            )
            cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        await close_clients(clients)

    received = len(stats.latencies_ns)
    latencies = sorted(stats.latencies_ns)
    metrics: Metrics = {"lost": expected - received, "note": "; ".join(notes) or None}
    if received:
        metrics |= {
            "us_per_delivery": cpu / received * 1e6,
            "us_per_event": cpu / args.events * 1e6,
            "p50_ms": percentile(latencies, 50) / 1e6,
            "p99_ms": percentile(latencies, 99) / 1e6,
        }
    return metrics


# --------------------------------------------------------------------------- firehose


class FirehoseClient(StreamClient):
    __slots__ = ("counter", "ended_at")

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self.counter = SSEEventCounter()
        self.ended_at: float | None = None

    def body_received(self, data: bytes) -> None:
        self.counter.feed(data)

    def body_ended(self) -> None:
        self.ended_at = time.perf_counter()


async def measure_firehose(server: ServerProcess, args: argparse.Namespace) -> Metrics:
    loop = asyncio.get_running_loop()
    request = StreamClient.get(
        f"/firehose?n={args.firehose_events}&size={args.firehose_size}", SSE_HEADERS
    )
    client = FirehoseClient(request)
    cpu_before = cpu_seconds(server.pid)
    start = time.perf_counter()
    await loop.create_connection(lambda: client, "127.0.0.1", server.port)
    try:
        async with asyncio.timeout(args.timeout):
            await client.closed
    except TimeoutError:
        pass
    finally:
        if client.transport is not None:
            client.transport.abort()
    end = client.ended_at or time.perf_counter()
    cpu = cpu_seconds(server.pid) - cpu_before
    events = client.counter.events
    metrics: Metrics = {}
    if events:
        metrics |= {"firehose_eps": events / (end - start), "firehose_us": cpu / events * 1e6}
    if client.ended_at is None or events != args.firehose_events:
        how = "timed out" if client.ended_at is None else "ended"
        metrics["note"] = (
            f"firehose: {how} after {events}/{args.firehose_events} events (HTTP {client.status})"
        )
    return metrics


# ------------------------------------------------------------------------------ main

# ------------------------------------------------------------------------------ churn


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def measure_churn(server: ServerProcess, args: argparse.Namespace) -> Metrics:
    """Subscribe and leave in waves; afterwards the server must be back where it was."""
    request = StreamClient.get("/channels/churn/events", {**SSE_HEADERS, **args.headers})

    def subscriber() -> StreamClient:
        return StreamClient(request)

    def rss() -> float:
        return rss_kib(server.pid)

    async def wave() -> int:
        clients, failed = await open_clients(subscriber, args.churn_batch, server.port, timeout_s=args.timeout)
        await close_clients(clients)
        return failed

    for _ in range(2):  # warm-up: first-use allocations are not a leak
        await wave()
    fds_before = await settled(lambda: open_fds(server.pid), tolerance=0)
    rss_before = await settled(rss, tolerance=16)
    started = time.perf_counter()
    failed = 0
    for _ in range(args.churn_waves):
        failed += await wave()
    elapsed = time.perf_counter() - started
    # A server that noticed every departure is back to its descriptors and memory.
    fds_after = await settled(lambda: open_fds(server.pid), tolerance=0)
    rss_after = await settled(rss, tolerance=16)
    cycles = args.churn_waves * args.churn_batch
    metrics: Metrics = {
        "churn_cps": cycles / elapsed,
        "churn_fds": fds_after - fds_before,
        "churn_rss_kib": rss_after - rss_before,
    }
    if failed:
        metrics["note"] = f"churn: {failed}/{cycles} subscriptions failed"
    return metrics


Part = Callable[[ServerProcess, argparse.Namespace], Coroutine[Any, Any, Metrics]]
PARTS: dict[str, Part] = {
    "idle": measure_idle,
    "fanout": measure_fanout,
    "firehose": measure_firehose,
    "churn": measure_churn,
}

COLUMNS = [
    Column("idle_kib", "idle KiB/sub", "{:.1f}", ratio=True),
    Column("us_per_delivery", "fan-out us/delivery", "{:.1f}", ratio=True),
    Column("us_per_event", "fan-out us/event", "{:.0f}"),
    Column("lost", "lost", "{:,d}"),
    Column("p50_ms", "p50 ms", "{:.1f}"),
    Column("p99_ms", "p99 ms", "{:.1f}"),
    Column("firehose_eps", "firehose events/s", "{:,.0f}", ratio=True),
    Column("firehose_us", "firehose us/event", "{:.1f}"),
    Column("churn_cps", "churn subscribe+leave/s", "{:,.0f}", ratio=True),
    Column("churn_fds", "fds left after churn", "{:+d}"),
    Column("churn_rss_kib", "RSS growth after churn KiB", "{:+,.0f}"),
    Column("rss_mib", "RSS at start MiB", "{:.1f}"),
    Column("others", "others' CPU % (max)", "{:.0f}"),
    Column("note", "notes"),
]


def client_runner() -> asyncio.Runner:
    """An event loop for the load generator: uvloop when installed (a cheaper client)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def run_part(name: str, template: tuple[str, ...], part: Part, args: argparse.Namespace) -> Metrics:
    """Start a fresh server, run one part against it, stop it. ServerFailed if it breaks."""
    with ServerProcess(name, template, cpu=args.server_cpu) as server, client_runner() as runner:
        meter = CoreMeter([args.server_cpu, args.load_cpu])
        server_before, client_before = cpu_seconds(server.pid), time.process_time()
        try:
            metrics = runner.run(part(server, args))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, ProtocolError) as exc:
            raise ServerFailed(f"{type(exc).__name__}: {exc}") from exc
        if not server.alive():
            raise ServerFailed(f"exited during the run: {server.log_tail()}")
        own = {
            args.server_cpu: cpu_seconds(server.pid) - server_before,
            args.load_cpu: time.process_time() - client_before,
        }
        return metrics | {"others": meter.foreign_pct(own)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2000, help="idle subscribers (K)")
    parser.add_argument(
        "--fanout-subscribers", type=int, default=1000, help="fan-out subscribers (S)"
    )
    parser.add_argument("--events", type=int, default=50, help="events published in fan-out (E)")
    parser.add_argument("--rate", type=float, default=10.0, help="fan-out publishes per second")
    parser.add_argument("--firehose-events", type=int, default=200_000)
    parser.add_argument(
        "--firehose-size", type=int, default=64, help="bytes of data per firehose event"
    )
    parser.add_argument("--churn-waves", type=int, default=20, help="churn: waves of subscribe+leave")
    parser.add_argument("--churn-batch", type=int, default=500, help="churn: subscribers per wave")
    parser.add_argument("--timeout", type=float, default=120.0, help="cap on any one wait, seconds")
    parser.add_argument("--only", action="append", help="server name (repeat or comma-separate)")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="also run sse_server from the checkout at PATH, as NAME (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="also run this repo's sse_server with extra flags, as NAME (repeatable)")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="send this header on every subscribe and publish (repeatable)")
    parser.add_argument("--baseline", default=BASELINE, help="the row the ratio columns divide by")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every part per server, interleaved")
    for part in PARTS:
        parser.add_argument(f"--skip-{part}", action="store_true", help=f"skip the {part} part")
    parser.add_argument("--redis", action="store_true",
                        help="also run sse_server with --backplane to a redis-server started here "
                             "(row sse_server+redis)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    args = parser.parse_args()
    args.headers = parse_headers(args.header)
    return args


def tree_server(spec: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=PATH`` -> the command that serves PATH's sse_server (``-P``: not this repo's)."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not os.path.isdir(os.path.join(path, "sse_server")):
        sys.exit(f"--tree wants NAME=PATH to a checkout with sse_server/, got {spec!r}")
    return name, ("env", f"PYTHONPATH={os.path.abspath(path)}", "{python}", "-P", *OUR_SERVER[1:])


def median_row(runs: list[Metrics]) -> Metrics:
    """The median of each numeric figure over repeated runs; other values from the last run."""
    row: Metrics = {}
    for key in {k for run in runs for k in run}:
        values = [run[key] for run in runs if key in run]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            mid = statistics.median(numbers)
            row[key] = type(numbers[0])(mid) if isinstance(numbers[0], int) else mid
        else:
            row[key] = values[-1]
    return row


def main() -> None:
    args = parse_args()
    servers = (select_servers(SERVERS, args.only) | dict(tree_server(spec) for spec in args.tree)
               | dict(variant_server(spec) for spec in args.variant))
    redis = RedisProcess(args.load_cpu) if args.redis else None
    if redis is not None:
        servers["sse_server+redis"] = (*OUR_SERVER, "--backplane", redis.url)
    try:
        run_all(args, servers)
    finally:
        if redis is not None:
            redis.stop()


def run_all(args: argparse.Namespace, servers: dict[str, tuple[str, ...]]) -> None:
    peer_modules = {
        "starlette": ["uvicorn", "starlette", "sse_starlette"],
        "aiohttp": ["aiohttp", "aiohttp_sse"],
    }
    require_modules(m for name in servers for m in peer_modules.get(name, []))
    parts = {name: fn for name, fn in PARTS.items() if not getattr(args, f"skip_{name}")}
    pin_self(args.load_cpu)
    raise_nofile_limit(max(args.subscribers, args.fanout_subscribers) + WARM_SUBSCRIBERS + 256)
    exit_on_sigterm()

    runs: dict[str, list[Metrics]] = {name: [] for name in servers}
    notes: dict[str, list[str]] = {name: [] for name in servers}
    skipped: dict[str, str] = {}
    for rep in range(args.repeats):
        for name, template in servers.items():
            if name in skipped:
                continue
            row: Metrics = {}
            for part_name, part in parts.items():
                print(f"run {rep + 1}/{args.repeats} {name}: {part_name} ...", file=sys.stderr, flush=True)
                try:
                    metrics = run_part(name, template, part, args)
                except ServerDidNotStart as exc:
                    skipped[name] = str(exc)
                    print(f"skipping {name}: {exc}", file=sys.stderr)
                    break
                except ServerFailed as exc:  # note it and go on: other parts may work
                    notes[name].append(f"{part_name} failed: {exc}")
                    print(f"{name}: {part_name} failed: {exc}", file=sys.stderr)
                    continue
                if note := metrics.pop("note", None):
                    notes[name].append(note)
                metrics["others"] = max(metrics["others"], row.get("others", 0.0))
                row |= metrics
                print(f"{name}: {part_name}: {format_metrics(metrics)}", file=sys.stderr, flush=True)
            if name not in skipped:
                runs[name].append(row)
    rows: dict[str, Metrics] = {}
    for name, server_runs in runs.items():
        row = median_row(server_runs) if server_runs else {}
        if name not in skipped and any(value is not None for value in row.values()):
            rows[name] = row | {"note": "; ".join(dict.fromkeys(notes[name])) or None}

    print(f"\n{describe(args, parts)}\n")
    print(markdown_table(rows, COLUMNS, baseline=args.baseline))
    warn_if_shared(max((row.get("others", 0.0) for row in rows.values()), default=0.0))
    for name, reason in skipped.items():
        print(f"\nskipped {name}: {reason}")


def describe(args: argparse.Namespace, parts: dict[str, Part]) -> str:
    """One line saying what was measured, for the table's caption."""
    what = {
        "idle": f"idle K={args.subscribers}",
        "fanout": f"fan-out S={args.fanout_subscribers} E={args.events} at {args.rate:g}/s",
        "firehose": f"firehose n={args.firehose_events} size={args.firehose_size}",
        "churn": f"churn {args.churn_waves} waves x {args.churn_batch}",
    }
    return (
        "SSE: "
        + "; ".join(what[p] for p in parts)
        + f"; server on CPU {args.server_cpu}, load on CPU {args.load_cpu}"
        + (f"; median of {args.repeats} interleaved runs" if args.repeats > 1 else "")
    )


def format_metrics(metrics: Metrics) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


if __name__ == "__main__":
    main()
