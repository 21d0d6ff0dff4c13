"""Requests per second for small keep-alive GETs to /healthz, measured with wrk.

Strategy: each server runs alone, pinned to CPU 0; wrk runs pinned to CPU 1
(`taskset -c 1 wrk -t1 -c50 -d10s http://127.0.0.1:P/healthz`), so the number
is what one core of server does. Every run starts a fresh server, warms it with
a short wrk run, then measures. Runs are interleaved (A B C A B C ...) so drift
in the machine's state spreads over all servers, and the median is reported
with the ratio to uvicorn+h11 (uvicorn on the asyncio loop: the pure-Python
baseline closest to sse_server). Server CPU is read from /proc during the
measured run: ~100% means the server was the bottleneck.

A server that does not come up (e.g. sse_server before it exists, or node not
installed) is reported and skipped.

Usage:
    python loadtests/bench_http.py                     # 3 interleaved runs of 10 s each
    python loadtests/bench_http.py --duration 5 --repeats 5 --connections 100
    python loadtests/bench_http.py --only sse_server --only uvicorn-h11

Variants of our server side by side in one run: ``--variant NAME=ARGS`` adds
sse_server started with ARGS appended, ``--tree NAME=PATH`` adds the sse_server of
another checkout; ``--baseline`` picks the row the ratio column divides by:
    python loadtests/bench_http.py --only sse_server --baseline sse_server \
        --variant auth='--jwt-secret-env SSE_JWT_SECRET' \
        --header "Authorization: Bearer $(python -m sse_server token --subscribe '*')"
    python loadtests/bench_http.py --only sse_server --baseline sse_server \
        --variant "log-text=--log-level info" \
        --variant "log-json=--log-level info --access-log-format json"
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence

from benchlib import (
    OUR_SERVER,
    Column,
    CoreMeter,
    ServerFailed,
    ServerProcess,
    cpu_seconds,
    exit_on_sigterm,
    markdown_table,
    median,
    require_modules,
    select_servers,
    warn_if_shared,
)

# Node's core http module: the reference for "what one event loop can do".
NODE_SERVER = (
    "require('http').createServer((req, res) => {"
    " res.writeHead(200, {'content-type': 'text/plain'}); res.end('ok'); })"
    ".listen(Number(process.argv[1]), '127.0.0.1');"
)

SERVERS: dict[str, tuple[str, ...]] = {
    "sse_server": OUR_SERVER,
    "uvicorn-h11": (
        "{python}", "{peers}/starlette_app.py", "--port", "{port}",
        "--loop", "asyncio", "--http", "h11",
    ),
    "uvicorn-httptools-uvloop": (
        "{python}", "{peers}/starlette_app.py", "--port", "{port}",
        "--loop", "uvloop", "--http", "httptools",
    ),
    "node-http": ("node", "-e", NODE_SERVER, "{port}"),
}  # fmt: skip
BASELINE = "uvicorn-h11"

WRK_RPS = re.compile(rb"Requests/sec:\s+([\d.]+)")
WRK_NON_2XX = re.compile(rb"Non-2xx or 3xx responses:\s+(\d+)")
WRK_SOCKET_ERRORS = re.compile(
    rb"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children: wrk runs
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    port: int, *, duration_s: int, connections: int, cpu: int, headers: Sequence[str] = ()
) -> tuple[float, int]:
    """One wrk run against /healthz: (requests/s, errors: non-2xx + socket errors)."""
    argv = [
        "taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
        *(arg for header in headers for arg in ("-H", header)),
        f"http://127.0.0.1:{port}/healthz",
    ]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, timeout=duration_s + 30, stdin=subprocess.DEVNULL
    )
    out = done.stdout
    rps = WRK_RPS.search(out)
    if done.returncode != 0 or rps is None:
        tail = (done.stderr or out).decode("utf-8", "replace").strip()[-300:]
        raise ServerFailed(f"wrk exited {done.returncode}: {tail}")
    errors = sum(
        int(n)
        for m in (WRK_NON_2XX, WRK_SOCKET_ERRORS)
        if (found := m.search(out))
        for n in found.groups()
    )
    return float(rps.group(1)), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of wrk before each run (0: none)"
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per server")
    parser.add_argument("--only", action="append", help="server name (repeat or comma-separate)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="add sse_server started with ARGS appended (repeatable)")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="add the sse_server of the checkout at PATH (repeatable)")
    parser.add_argument("--baseline", default=BASELINE, help="the row the ratio column divides by")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="send this header on every request of every row (wrk -H; repeatable)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        sys.exit("wrk not found on PATH (Debian: apt-get install wrk)")
    servers = select_servers(SERVERS, args.only)
    for spec in args.variant:
        name, sep, extra = spec.partition("=")
        if not sep or not name:
            sys.exit(f"--variant wants NAME=ARGS, got {spec!r}")
        servers[name] = (*OUR_SERVER, *shlex.split(extra))
    for spec in args.tree:
        name, sep, path = spec.partition("=")
        if not sep or not os.path.isdir(os.path.join(path, "sse_server")):
            sys.exit(f"--tree wants NAME=PATH to a checkout with sse_server/, got {spec!r}")
        servers[name] = ("env", f"PYTHONPATH={os.path.abspath(path)}", "{python}", "-P", *OUR_SERVER[1:])
    if any("starlette_app.py" in " ".join(cmd) for cmd in servers.values()):
        require_modules(["uvicorn", "starlette", "sse_starlette", "httptools", "uvloop"])
    exit_on_sigterm()

    rps: dict[str, list[float]] = defaultdict(list)
    cpu_pct: dict[str, list[float]] = defaultdict(list)
    others: dict[str, list[float]] = defaultdict(list)  # CPU % of other processes on our CPUs
    errors: dict[str, int] = defaultdict(int)
    skipped: dict[str, str] = {}
    for rep in range(args.repeats):
        for name, template in servers.items():
            if name in skipped:
                continue
            try:
                with ServerProcess(name, template, cpu=args.server_cpu) as server:
                    if args.warmup > 0:
                        run_wrk(
                            server.port,
                            duration_s=args.warmup,
                            connections=args.connections,
                            cpu=args.load_cpu,
                            headers=args.header,
                        )
                    cpu_before, wrk_before = cpu_seconds(server.pid), children_cpu_seconds()
                    meter = CoreMeter([args.server_cpu, args.load_cpu])
                    value, errs = run_wrk(
                        server.port,
                        duration_s=args.duration,
                        connections=args.connections,
                        cpu=args.load_cpu,
                        headers=args.header,
                    )
                    server_s = cpu_seconds(server.pid) - cpu_before
                    wrk_s = children_cpu_seconds() - wrk_before
                    cpu_pct[name].append(100 * server_s / args.duration)
                    others[name].append(
                        meter.foreign_pct({args.server_cpu: server_s, args.load_cpu: wrk_s})
                    )
            except (ServerFailed, subprocess.SubprocessError) as exc:
                skipped[name] = str(exc)
                print(f"skipping {name}: {exc}", file=sys.stderr)
                continue
            rps[name].append(value)
            errors[name] += errs
            print(
                f"run {rep + 1}/{args.repeats} {name}: {value:,.0f} req/s, {errs} errors",
                file=sys.stderr,
            )

    rows = {
        name: {
            "rps": median(rps[name]),
            "runs": " / ".join(f"{v / 1000:.1f}k" for v in rps[name]),
            "cpu": median(cpu_pct[name]),
            # server CPU per request: CPU share over the request rate, in microseconds
            "us_per_request": median(cpu_pct[name]) / 100 / median(rps[name]) * 1e6,
            "others": max(others[name]),
            "errors": errors[name],
        }
        for name in servers
        if rps[name]
    }
    print(
        f"\nGET /healthz, wrk -t1 -c{args.connections} -d{args.duration}s, "
        f"median of {args.repeats}, server on CPU {args.server_cpu}, wrk on CPU {args.load_cpu}\n"
    )
    columns = [
        Column("rps", "req/s (median)", "{:,.0f}", ratio=True),
        Column("runs", "runs"),
        Column("cpu", "server CPU %", "{:.0f}"),
        Column("us_per_request", "server us/request", "{:.1f}"),
        Column("others", "others' CPU % (max)", "{:.0f}"),
        Column("errors", "errors", "{:d}"),
    ]
    print(markdown_table(rows, columns, baseline=args.baseline if args.baseline in rows else BASELINE))
    warn_if_shared(max((max(v) for v in others.values() if v), default=0.0))
    for name, reason in skipped.items():
        print(f"\nskipped {name}: {reason}")


if __name__ == "__main__":
    main()
