"""Deliveries per second of server CPU with ``--workers 2`` vs ``--workers 1``.

Both runs use the Redis backplane (``--workers 2`` needs it, and the comparison should
differ in the worker count only), against a redis-server this script starts
(benchlib.RedisProcess). Per run: S subscribers on /channels/fan/events (spread over the workers
by the kernel; the split read from /metrics is printed), one keep-alive publisher
sending E events at R/s, then every delivery counted by the clients. Server CPU is
utime + stime from /proc/<pid>/stat summed over the supervisor and every worker,
over the publishing window; Redis's CPU is reported apart. Median of --repeats.

What the figure means: per CPU second, a worker costs about what one process costs
(each event is encoded once per worker, delivered once per subscriber), so the
ratio should be near 1.0x; the gain of 2 workers is that they can use two cores at
once, which a busy 2-core machine cannot show as wall-clock throughput.

    python loadtests/bench_workers.py                          # 500 subscribers, 100 events at 50/s, 3 repeats
    python loadtests/bench_workers.py --subscribers 2000 --events 200 --rate 100 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - after the path fix, like the other scripts
    OUR_SERVER,
    DataLineClient,
    HttpConnection,
    RedisProcess,
    ServerDidNotStart,
    ServerProcess,
    StreamClient,
    close_clients,
    cpu_seconds,
    exit_on_sigterm,
    median,
    open_clients,
    raise_nofile_limit,
    wait_for_count,
)

_SUBSCRIBER_LINE = re.compile(rb'^sse_subscribers\{worker="(\d+)"\} (\d+)', re.M)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the workers of a supervisor)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def server_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its children now (a worker that exited meanwhile is not counted)."""
    total = 0.0
    for p in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


class Counter(DataLineClient):
    """Counts ``data:`` lines (one per delivered event)."""

    __slots__ = ("counts",)

    def __init__(self, request: bytes, counts: list[int]) -> None:
        super().__init__(request)
        self.counts = counts

    def data_line(self, value: bytes, now_ns: int) -> None:
        self.counts[0] += 1


async def one_run(port: int, pid: int, redis_pid: int, args: argparse.Namespace) -> dict[str, float | str]:
    path = "/channels/fan/events"
    request = StreamClient.get(path, {"Accept": "text/event-stream"})
    counts = [0]
    clients, failed = await open_clients(lambda: Counter(request, counts), args.subscribers, port,
                                         concurrency=20, timeout_s=args.timeout)
    try:
        async with HttpConnection(port, timeout_s=args.timeout) as conn:
            # Until every subscriber got a warm-up event: all are registered on every worker.
            status, _ = await conn.request("POST", path, b"warmup")
            assert status == 202, status
            await wait_for_count(lambda: counts[0], len(clients), stall_s=3, timeout_s=args.timeout)
            _, scrape = await conn.request("GET", "/metrics")
            split = "/".join(n.decode() for _, n in sorted(_SUBSCRIBER_LINE.findall(scrape))) or "-"
            counts[0] = 0
            loop = asyncio.get_running_loop()
            cpu_before, redis_before = server_cpu_s(pid), cpu_seconds(redis_pid)
            start = loop.time()
            for i in range(args.events):
                await asyncio.sleep(max(0.0, start + i / args.rate - loop.time()))
                status, body = await conn.request("POST", path, b"x" * args.size)
                if status != 202:
                    raise SystemExit(f"publish answered {status}: {body[:200]!r}")
            expected = args.events * len(clients)
            await wait_for_count(lambda: counts[0], expected, stall_s=5, timeout_s=args.timeout)
            wall_s = loop.time() - start
            cpu_s = server_cpu_s(pid) - cpu_before
            redis_s = cpu_seconds(redis_pid) - redis_before
    finally:
        await close_clients(clients)
    delivered = counts[0]
    return {
        "deliveries_per_cpu_s": delivered / cpu_s if cpu_s > 0 else float("nan"),
        "us_per_delivery": cpu_s / delivered * 1e6 if delivered else float("nan"),
        "server_cpu_s": cpu_s,
        "server_cpu_pct": 100 * cpu_s / wall_s,
        "redis_cpu_pct": 100 * redis_s / wall_s,
        "lost": expected - delivered,
        "failed": failed,
        "split": split,
    }


def run_mode(workers: int, redis_url: str, redis_pid: int, args: argparse.Namespace) -> dict[str, float | str]:
    template = (*OUR_SERVER, "--workers", str(workers), "--backplane", redis_url,
                "--publish-rate", "0", "--connect-rate", "0", "--max-connections-per-client", "0")
    server = ServerProcess(f"workers={workers}", template, health_tries=300)
    server.argv[2] = args.server_cpus  # taskset -c CPUS: both runs may use the same cores
    with server:
        result = asyncio.run(one_run(server.port, server.pid, redis_pid, args))
        if workers > 1 and len(children(server.pid)) != workers:
            result["split"] = f"{result['split']} (workers: {children(server.pid)})"
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=500)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--rate", type=float, default=50.0, help="events per second")
    p.add_argument("--size", type=int, default=64, help="bytes of data per event")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--server-cpus", default="0,1", help="taskset CPU list for the server (both runs)")
    p.add_argument("--redis-cpu", type=int, default=1, help="CPU redis-server is pinned to")
    args = p.parse_args()
    exit_on_sigterm()
    raise_nofile_limit(args.subscribers + 256)
    runs: dict[int, list[dict[str, float | str]]] = {1: [], 2: []}
    redis = RedisProcess(cpu=args.redis_cpu)
    try:
        for _ in range(args.repeats):
            for workers in (1, 2):  # interleaved: a busy moment of the machine hits both
                try:
                    runs[workers].append(run_mode(workers, redis.url, redis.pid, args))
                except ServerDidNotStart as e:
                    sys.exit(str(e))
    finally:
        redis.stop()
    print(f"\nS={args.subscribers} subscribers, E={args.events} events of {args.size} B at {args.rate:g}/s, "
          f"server on CPUs {args.server_cpus}, median of {args.repeats}\n")
    print("| workers | deliveries / CPU-s | µs CPU / delivery | server CPU s | server CPU % of wall | redis CPU % "
          "| lost | subscribers per worker |")
    print("|---|---|---|---|---|---|---|---|")
    base = median(float(r["deliveries_per_cpu_s"]) for r in runs[1])
    for workers, results in runs.items():
        rate = median(float(r["deliveries_per_cpu_s"]) for r in results)
        print(f"| {workers} | {rate:,.0f} ({rate / base:.2f}x) "
              f"| {median(float(r['us_per_delivery']) for r in results):.2f} "
              f"| {median(float(r['server_cpu_s']) for r in results):.2f} "
              f"| {median(float(r['server_cpu_pct']) for r in results):.0f} "
              f"| {median(float(r['redis_cpu_pct']) for r in results):.0f} "
              f"| {sum(int(r['lost']) + int(r['failed']) for r in results)} "
              f"| {', '.join(str(r['split']) for r in results)} |")


if __name__ == "__main__":
    main()
