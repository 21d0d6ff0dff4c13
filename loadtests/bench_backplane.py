"""The Redis backplane's cost: publish-to-receive latency and server CPU per event.

Three variants, each on fresh server processes, interleaved over ``--repeats``:

  in-process   one node, the in-memory engine; publish and subscribe on it
  redis-local  one node with ``--backplane``; publish and subscribe on it, so every
               event goes node -> Redis (the publish script) -> node (pub/sub)
  cross-node   nodes A and B, both ``--backplane`` on the same redis-server; publish
               on A, every subscriber on B

Strategy. Nodes are ``python -m sse_server`` children (benchlib.ServerProcess, so
``--log-level warning``: no access log in the CPU figures; the port comes from
benchlib.free_port and readiness from /healthz), all pinned to ``--server-cpu``.
redis-server (one for the whole run, no persistence) runs on ``--load-cpu`` with
the load, as in bench_sse.py's ``--redis`` row. The subscribers live in
``--load-procs`` load processes (this script run with ``--load-worker``), raw
asyncio sockets reading SSE, driven over their stdin/stdout with one JSON object
per line; the publisher is this process, one keep-alive connection.

Per variant run:
  1. warm-up: a few publishes to a channel nobody subscribes to (the engine connects);
  2. idle: ``--idle-s`` with nothing sent, the background CPU rate of every process
     (timers, Redis's cron), later subtracted from the windows below;
  3. 0 subscribers: ``--quiet-s`` of publishes at ``--rate`` to that channel, then
     ``--burst-events`` back to back; server CPU per event of each (nodes, and
     redis-server apart);
  4. S subscribers (``--subscribers``) on the fan-out channel of the subscribing
     node; warm-up events until each of them has received one (pub/sub on B is
     live), then ``--rate`` events/s for ``--duration`` s, each event's data being
     ``time.time_ns()`` (CLOCK_REALTIME, one clock for every process on this box)
     taken as the POST is written. Receive time minus that is the latency of one
     delivery; the smallest per event is the "first delivery" (the path through
     the engine without the fan-out's queueing). Server CPU per event as in 3.

CPU is utime + stime of each process, read from /proc/PID/schedstat in ns
(benchlib.cpu_seconds_fine; /proc/PID/stat's 10 ms ticks are kept in the JSON as
a check). The engine's share of an event is the Redis variant's node CPU per
event minus the in-process one; redis-server's own CPU per event is on top.

Usage (from the repository root):
    python loadtests/bench_backplane.py                         # 3 x 25 s per variant, about 7 min
    python loadtests/bench_backplane.py --duration 5 --repeats 1  # quick check, about 1 min
    python loadtests/bench_backplane.py --only in-process,cross-node --subscribers 2000

Prints a markdown table (progress on stderr) and writes the runs, medians and
the command to ``loadtests/results/backplane/<UTC time>.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_sse import SSE_HEADERS, client_runner, publish
from benchlib import (
    LOADTESTS_DIR,
    OUR_SERVER,
    REPO_ROOT,
    CoreMeter,
    DataLineClient,
    HttpConnection,
    RedisProcess,
    ServerFailed,
    ServerProcess,
    StreamClient,
    close_clients,
    cpu_seconds,
    cpu_seconds_fine,
    exit_on_sigterm,
    median,
    open_clients,
    percentile,
    pin_self,
    raise_nofile_limit,
    wait_for_count,
    warn_if_shared,
)

VARIANTS = ("in-process", "redis-local", "cross-node")
BASELINE = "in-process"
RESULTS_DIR = LOADTESTS_DIR / "results" / "backplane"
REPLY_LIMIT_BYTES = 64 * 1024 * 1024  # a collect reply carries every latency sample
WARMUP_PUBLISHES = 20
WARMUP_TRIES = 100  # fan-out warm-up publishes at most, 0.1 s apart

Metrics = dict[str, Any]


# ------------------------------------------------------------------ the load process


@dataclass(slots=True)
class Tally:
    """What one load process's subscribers received since the last reset."""

    latencies_ns: list[int] = field(default_factory=list)  # one per timestamped delivery
    first_ns: dict[int, int] = field(default_factory=dict)  # publish time -> smallest latency
    warm: int = 0  # subscribers that have received a warm-up (non-timestamp) event


class TimedSubscriber(DataLineClient):
    """Reads `data:` lines: an integer is a publish time (ns), anything else a warm-up."""

    __slots__ = ("tally", "warm")

    def __init__(self, request: bytes, tally: Tally) -> None:
        super().__init__(request)
        self.tally = tally
        self.warm = False

    def data_line(self, value: bytes, now_ns: int) -> None:
        tally = self.tally
        try:
            sent = int(value)  # int() strips " " and "\r"
        except ValueError:
            if not self.warm:
                self.warm = True
                tally.warm += 1
            return
        latency = now_ns - sent
        tally.latencies_ns.append(latency)
        first = tally.first_ns.get(sent)
        if first is None or latency < first:
            tally.first_ns[sent] = latency


class LoadWorker:
    """The subscribers of one load process and the commands that drive them."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.clients: list[StreamClient] = []

    async def handle(self, cmd: Mapping[str, Any]) -> Metrics:
        op = cmd["op"]
        if op == "subscribe":
            request = StreamClient.get(cmd["path"], SSE_HEADERS)
            clients, failed = await open_clients(
                lambda: TimedSubscriber(request, self.tally), cmd["count"], cmd["port"], timeout_s=cmd["timeout"]
            )
            self.clients += clients
            return {"subscribed": len(clients), "failed": failed}
        if op == "warm":
            return {"warm": self.tally.warm}
        if op == "reset":
            self.tally.latencies_ns.clear()
            self.tally.first_ns.clear()
            return {}
        if op == "collect":
            await wait_for_count(
                lambda: len(self.tally.latencies_ns), cmd["expected"], stall_s=cmd["stall_s"], timeout_s=cmd["timeout"]
            )
            return {
                "latencies_us": [ns // 1000 for ns in self.tally.latencies_ns],
                "first_us": {str(k): v // 1000 for k, v in self.tally.first_ns.items()},
                "open": sum(1 for c in self.clients if not c.closed.done()),
            }
        if op == "close":
            clients, self.clients = self.clients, []
            await close_clients(clients)
            self.tally = Tally()
            return {"closed": len(clients)}
        raise ValueError(f"unknown op {op!r}")


async def load_worker_main() -> None:
    """Read one JSON command per line on stdin, answer one JSON line each, until EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = LoadWorker()
    try:
        while line := await reader.readline():
            try:
                reply = await worker.handle(json.loads(line))
            except (OSError, TimeoutError, ValueError, KeyError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        await close_clients(worker.clients)


class LoadProcess:
    """One load process (this script with --load-worker), pinned, in its own process group."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, cpu: int, subscribers: int) -> LoadProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            "taskset", "-c", str(cpu), sys.executable, str(Path(__file__).resolve()),
            "--load-worker", "--subscribers", str(subscribers),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT, env=env, start_new_session=True, limit=REPLY_LIMIT_BYTES,
        )  # fmt: skip
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid  # taskset execs python

    async def call(self, timeout_s: float, **cmd: Any) -> Metrics:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        async with asyncio.timeout(timeout_s):
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise ServerFailed(f"load process {self.pid} exited (status {self.proc.returncode})")
        reply: Metrics = json.loads(line)
        if "error" in reply:
            raise ServerFailed(f"load process: {cmd['op']}: {reply['error']}")
        return reply

    async def stop(self, grace_s: float = 10.0) -> None:
        """Close its stdin (it closes its subscribers and exits), then end its group, bounded."""
        proc = self.proc
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await proc.wait()


# ------------------------------------------------------------------------- a variant


class Cpu:
    """CPU seconds of named processes between two readings, net of their idle rate."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.start()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._fine0 = {n: cpu_seconds_fine(p) for n, p in self.pids.items()}
        self._ticks0 = {n: cpu_seconds(p) for n, p in self.pids.items()}

    def read(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """(wall seconds, fine CPU seconds per process, tick CPU seconds per process) since start()."""
        wall = time.monotonic() - self._t0
        fine = {n: cpu_seconds_fine(p) - self._fine0[n] for n, p in self.pids.items()}
        ticks = {n: cpu_seconds(p) - self._ticks0[n] for n, p in self.pids.items()}
        return wall, fine, ticks


def per_event_us(
    cpu: Cpu, events: int, idle_rate: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """CPU per event in us per process (idle rate x wall subtracted), and the raw seconds."""
    wall, fine, ticks = cpu.read()
    net = {n: max(0.0, s - idle_rate.get(n, 0.0) * wall) / events * 1e6 for n, s in fine.items()}
    raw = {"wall_s": wall} | {f"{n}_s": s for n, s in fine.items()} | {f"{n}_ticks_s": s for n, s in ticks.items()}
    return net, raw


def node_templates(variant: str, redis_url: str | None) -> list[tuple[str, tuple[str, ...]]]:
    """The nodes of a variant: [(name, command)]; the first publishes, the last is subscribed to."""
    if variant == "in-process":
        return [("node", OUR_SERVER)]
    assert redis_url is not None
    backplane = (*OUR_SERVER, "--backplane", redis_url)
    if variant == "redis-local":
        return [("node", backplane)]
    return [("node_a", backplane), ("node_b", backplane)]


async def paced(conn: HttpConnection, path: str, events: int, rate: float) -> list[float]:
    """Publish `events` at `rate` per second, each body time.time_ns() as it is written;
    returns each POST's round trip, ms, sorted."""
    loop = asyncio.get_running_loop()
    post_ms = []
    start = loop.time()
    for i in range(events):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        sent = time.time_ns()
        await publish(conn, path, str(sent).encode())
        post_ms.append((time.time_ns() - sent) / 1e6)
    return sorted(post_ms)


async def measure_quiet(
    conn: HttpConnection, path: str, pids: Mapping[str, int], args: argparse.Namespace
) -> tuple[Metrics, dict[str, float]]:
    """Phases 1-3 on a channel nobody subscribes to; returns the figures and the idle CPU rates."""
    for _ in range(WARMUP_PUBLISHES):  # the engine connects, first-use allocations happen
        await publish(conn, path, b"warmup")
    cpu = Cpu(pids)
    await asyncio.sleep(args.idle_s)
    wall, fine, _ = cpu.read()
    idle_rate = {n: s / wall for n, s in fine.items()}
    metrics: Metrics = {"idle_cpu_pct": {n: 100 * r for n, r in idle_rate.items()}}
    quiet_events = max(1, round(args.rate * args.quiet_s))
    cpu.start()
    await paced(conn, path, quiet_events, args.rate)
    metrics["quiet_us"], metrics["quiet_raw"] = per_event_us(cpu, quiet_events, idle_rate)
    cpu.start()
    started = time.perf_counter()
    for i in range(args.burst_events):
        await publish(conn, path, str(i).encode())
    metrics["burst_publish_per_s"] = args.burst_events / (time.perf_counter() - started)
    metrics["burst_us"], metrics["burst_raw"] = per_event_us(cpu, args.burst_events, idle_rate)
    return metrics, idle_rate


async def measure_fanout(
    conn: HttpConnection,
    path: str,
    port: int,
    pids: Mapping[str, int],
    idle_rate: Mapping[str, float],
    loads: Sequence[LoadProcess],
    args: argparse.Namespace,
) -> Metrics:
    """Phase 4: S subscribers on the node at `port`, events published on `conn`."""
    shares = [args.subscribers // len(loads) + (i < args.subscribers % len(loads)) for i in range(len(loads))]
    replies = await asyncio.gather(*(
        load.call(args.timeout + 5, op="subscribe", port=port, path=path, count=n, timeout=args.timeout)
        for load, n in zip(loads, shares, strict=True)
    ))  # fmt: skip
    subscribed = sum(r["subscribed"] for r in replies)
    metrics: Metrics = {"subscribed": subscribed, "subscribe_failed": sum(r["failed"] for r in replies)}
    warm = 0
    for _ in range(WARMUP_TRIES):  # until every subscriber got one: the subscribed node's pub/sub is live
        await publish(conn, path, b"warmup")
        await asyncio.sleep(0.1)
        warm = sum([(await load.call(args.timeout, op="warm"))["warm"] for load in loads])
        if warm >= subscribed:
            break
    metrics["warm"] = warm
    if warm < subscribed:
        print(f"warning: only {warm}/{subscribed} subscribers got a warm-up event", file=sys.stderr)
    await asyncio.sleep(0.5)  # the last warm-up events drain
    for load in loads:
        await load.call(args.timeout, op="reset")

    events = max(1, round(args.rate * args.duration))
    meter = CoreMeter([args.server_cpu, args.load_cpu])
    load0 = sum(cpu_seconds_fine(load.pid) for load in loads) + time.process_time()
    cpu = Cpu(pids)
    post_ms = await paced(conn, path, events, args.rate)
    collected = await asyncio.gather(*(
        load.call(args.timeout + 10, op="collect", expected=events * r["subscribed"], stall_s=5, timeout=args.timeout)
        for load, r in zip(loads, replies, strict=True)
    ))  # fmt: skip
    metrics["fan_us"], raw = per_event_us(cpu, events, idle_rate)
    load_cpu_s = sum(cpu_seconds_fine(load.pid) for load in loads) + time.process_time() - load0
    server_side = sum(raw[f"{n}_s"] for n in pids if n != "redis")
    redis_s = raw.get("redis_s", 0.0)
    metrics |= {
        "fan_raw": raw,
        "others_pct": meter.foreign_pct({args.server_cpu: server_side, args.load_cpu: load_cpu_s + redis_s}),
        "load_cpu_pct": 100 * load_cpu_s / raw["wall_s"],
    }

    latencies = sorted(us for reply in collected for us in reply["latencies_us"])
    firsts: dict[str, int] = {}
    for reply in collected:
        for k, v in reply["first_us"].items():
            firsts[k] = min(v, firsts.get(k, v))
    first = sorted(firsts.values())
    return metrics | {
        "events": events,
        "deliveries": len(latencies),
        "lost": events * subscribed - len(latencies),
        "p50_ms": percentile(latencies, 50) / 1e3,
        "p99_ms": percentile(latencies, 99) / 1e3,
        "max_ms": (latencies[-1] / 1e3) if latencies else float("nan"),
        "first_p50_ms": percentile(first, 50) / 1e3,
        "first_p99_ms": percentile(first, 99) / 1e3,
        "post_p50_ms": percentile(post_ms, 50),
        "post_p99_ms": percentile(post_ms, 99),
    }


async def run_variant(
    variant: str, rep: int, args: argparse.Namespace, redis: RedisProcess | None, loads: Sequence[LoadProcess]
) -> Metrics:
    """One run of a variant on fresh nodes, stopped (and the subscribers closed) on the way out."""
    nodes: list[ServerProcess] = []
    try:
        for name, template in node_templates(variant, redis.url if redis else None):
            nodes.append(ServerProcess(name, template, cpu=args.server_cpu).__enter__())
        pub, sub = nodes[0], nodes[-1]
        pids = {n.name: n.pid for n in nodes}
        if variant != "in-process" and redis is not None:
            pids["redis"] = redis.pid
        metrics: Metrics = {"variant": variant, "repeat": rep + 1}
        async with HttpConnection(pub.port, timeout_s=args.timeout) as conn:
            quiet, idle_rate = await measure_quiet(conn, f"/channels/quiet-{variant}-{rep}/events", pids, args)
            fan_path = f"/channels/fan-{variant}-{rep}/events"
            metrics |= quiet | await measure_fanout(conn, fan_path, sub.port, pids, idle_rate, loads, args)
        for node in nodes:
            if not node.alive():
                raise ServerFailed(f"{node.name} exited during the run: {node.log_tail()}")
        return metrics
    finally:
        for load in loads:
            with contextlib.suppress(ServerFailed, TimeoutError, OSError):
                await load.call(args.timeout, op="close")
        for node in nodes:
            node.stop()


# ------------------------------------------------------------------------ the report


def node_sum(per_process: Mapping[str, float]) -> float:
    return sum(v for n, v in per_process.items() if n != "redis")


def summarize(runs: Sequence[Metrics]) -> dict[str, Metrics]:
    """Medians per variant of every figure in the tables."""
    rows: dict[str, Metrics] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue

        def med(get: Any, runs: Sequence[Metrics] = mine) -> float:
            return median(get(r) for r in runs)

        row: Metrics = {
            "runs": len(mine),
            "subscribers": min(r["subscribed"] for r in mine),
            "lost": sum(r["lost"] for r in mine),
        }
        for key in ("p50_ms", "p99_ms", "max_ms", "first_p50_ms", "first_p99_ms", "post_p50_ms", "post_p99_ms",
                    "burst_publish_per_s", "others_pct", "load_cpu_pct"):  # fmt: skip
            row[key] = med(lambda r, k=key: r[k])
        for phase in ("quiet", "burst", "fan"):
            row[f"{phase}_node_us"] = med(lambda r, p=phase: node_sum(r[f"{p}_us"]))
            if any("redis" in r[f"{phase}_us"] for r in mine):
                row[f"{phase}_redis_us"] = med(lambda r, p=phase: r[f"{p}_us"]["redis"])
            for name in sorted({n for r in mine for n in r[f"{phase}_us"]} - {"redis", "node"}):
                row[f"{phase}_{name}_us"] = med(lambda r, p=phase, n=name: r[f"{p}_us"][n])
        rows[variant] = row
    base = rows.get(BASELINE)
    if base is not None:
        for variant, row in rows.items():
            if variant == BASELINE:
                continue
            for key in ("p50_ms", "p99_ms", "first_p50_ms", "first_p99_ms", "post_p50_ms"):
                row[f"extra_{key}"] = row[key] - base[key]
            for phase in ("quiet", "burst", "fan"):
                row[f"engine_{phase}_node_us"] = row[f"{phase}_node_us"] - base[f"{phase}_node_us"]
    return rows


def fmt(value: Any, spec: str = "{:.2f}") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return spec.format(value)


def tables(rows: Mapping[str, Metrics], args: argparse.Namespace) -> str:
    """Two markdown tables: latency, then CPU per event."""
    names = list(rows)
    out = [
        f"Latency, {args.subscribers:,} subscribers x {args.rate:g} events/s for {args.duration:g} s, "
        f"median of {min(row['runs'] for row in rows.values())} run(s) per variant (ms):",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    latency_rows = [
        ("publish-to-receive p50", "p50_ms"), ("publish-to-receive p99", "p99_ms"),
        (f"extra p50 over {BASELINE}", "extra_p50_ms"), (f"extra p99 over {BASELINE}", "extra_p99_ms"),
        ("first delivery per event p50", "first_p50_ms"), ("first delivery per event p99", "first_p99_ms"),
        (f"extra first-delivery p50 over {BASELINE}", "extra_first_p50_ms"),
        ("publish POST round trip p50", "post_p50_ms"), ("publish POST round trip p99", "post_p99_ms"),
        ("slowest delivery", "max_ms"),
    ]  # fmt: skip
    for label, key in latency_rows:
        out.append(f"| {label} | " + " | ".join(fmt(rows[n].get(key)) for n in names) + " |")
    out.append("| lost deliveries | " + " | ".join(f"{rows[n]['lost']:,}" for n in names) + " |")
    out += [
        "",
        "Server CPU per published event (us), net of each process's idle rate:",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    rate = f"{args.rate:g}/s"
    cpu_rows = [
        (f"nodes, 0 subscribers, {rate}", "quiet_node_us"),
        (f"  engine's share (minus {BASELINE})", "engine_quiet_node_us"),
        (f"  redis-server, 0 subscribers, {rate}", "quiet_redis_us"),
        ("nodes, 0 subscribers, back to back", "burst_node_us"),
        (f"  engine's share (minus {BASELINE})", "engine_burst_node_us"),
        ("  redis-server, 0 subscribers, back to back", "burst_redis_us"),
        (f"nodes, {args.subscribers:,} subscribers, {rate}", "fan_node_us"),
        (f"  engine's share (minus {BASELINE})", "engine_fan_node_us"),
        (f"  redis-server, {args.subscribers:,} subscribers, {rate}", "fan_redis_us"),
        ("  of which node A (publishes)", "fan_node_a_us"),
        ("  of which node B (subscribed)", "fan_node_b_us"),
        ("publishes/s back to back, one connection", "burst_publish_per_s"),
        ("load processes' CPU % (fan-out)", "load_cpu_pct"),
        ("others' CPU % (max of the two CPUs)", "others_pct"),
    ]
    for label, key in cpu_rows:
        spec = "{:,.0f}" if key.endswith(("per_s", "pct")) else "{:,.1f}"
        out.append(f"| {label} | " + " | ".join(fmt(rows[n].get(key), spec) for n in names) + " |")
    return "\n".join(out)


def write_results(path: Path, args: argparse.Namespace, runs: Sequence[Metrics], rows: Mapping[str, Metrics]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO_ROOT), *sys.argv[1:]]),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("load_worker", "out")},
        "medians": rows,
        "runs": list(runs),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


# ------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="subscribers in the fan-out phase (S)")
    parser.add_argument("--rate", type=float, default=10.0, help="fan-out publishes per second")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of fan-out publishing per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved")
    parser.add_argument("--quiet-s", type=float, default=None,
                        help="seconds of publishing at --rate with 0 subscribers (default: --duration, at most 10)")
    parser.add_argument("--burst-events", type=int, default=1000, help="back-to-back publishes with 0 subscribers")
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds of idle CPU measured per run")
    parser.add_argument("--load-procs", type=int, default=1, help="load processes the subscribers are spread over")
    parser.add_argument("--only", action="append", help="variants to run (repeat or comma-separate): "
                        + ", ".join(VARIANTS))  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0, help="cap on any one wait, seconds")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU of the nodes")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU of the load, the publisher and redis-server")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results file (default loadtests/results/backplane/<UTC time>.json)")
    parser.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    wanted = [v for arg in (args.only or [",".join(VARIANTS)]) for v in arg.split(",") if v]
    unknown = set(wanted) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    args.variants = [v for v in VARIANTS if v in wanted]
    if args.quiet_s is None:
        args.quiet_s = min(10.0, args.duration)
    bounds = {"--subscribers": args.subscribers >= 1, "--rate": 0 < args.rate <= 1000,
              "--duration": 0 < args.duration <= 3600, "--quiet-s": 0 < args.quiet_s <= 3600,
              "--repeats": 1 <= args.repeats <= 100,
              "--burst-events": 1 <= args.burst_events <= 1_000_000, "--idle-s": 0 < args.idle_s <= 600,
              "--load-procs": 1 <= args.load_procs <= 16, "--timeout": args.timeout > 0}  # fmt: skip
    for flag, ok in bounds.items():
        if not ok:
            parser.error(f"{flag} is out of range")
    return args


async def bench(args: argparse.Namespace) -> None:
    redis = RedisProcess(args.load_cpu) if set(args.variants) - {"in-process"} else None
    loads: list[LoadProcess] = []
    runs: list[Metrics] = []
    try:
        per_load = -(-args.subscribers // args.load_procs)
        loads = [await LoadProcess.start(args.load_cpu, per_load) for _ in range(args.load_procs)]
        for rep in range(args.repeats):
            for variant in args.variants:
                print(f"run {rep + 1}/{args.repeats} {variant} ...", file=sys.stderr, flush=True)
                try:
                    metrics = await run_variant(variant, rep, args, redis, loads)
                except (ServerFailed, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    print(f"{variant}: run {rep + 1} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    continue
                runs.append(metrics)
                print(
                    f"{variant}: p50 {metrics['p50_ms']:.2f} ms, p99 {metrics['p99_ms']:.2f} ms, "
                    f"first p50 {metrics['first_p50_ms']:.2f} ms, lost {metrics['lost']}, "
                    f"node us/event 0 subs {node_sum(metrics['quiet_us']):.0f}, "
                    f"{metrics['subscribed']} subs {node_sum(metrics['fan_us']):.0f}",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
    finally:
        for load in loads:
            await load.stop()
        if redis is not None:
            redis.stop()
    if not runs:
        sys.exit("no run completed")
    rows = summarize(runs)
    print()
    print(tables(rows, args))
    warn_if_shared(max(r["others_pct"] for r in runs))
    out = args.out or RESULTS_DIR / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    write_results(out, args, runs, rows)
    print(f"\nresults: {os.path.relpath(out, REPO_ROOT)}")


def main() -> None:
    args = parse_args()
    exit_on_sigterm()
    if args.load_worker:
        raise_nofile_limit(args.subscribers + 256)
        with client_runner() as runner:
            runner.run(load_worker_main())
        return
    pin_self(args.load_cpu)
    raise_nofile_limit(256)
    try:
        asyncio.run(bench(args))
    except KeyboardInterrupt:  # every process started was stopped on the way out
        sys.exit("interrupted")


if __name__ == "__main__":
    main()
