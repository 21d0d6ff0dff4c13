"""CPU instructions per keep-alive GET /healthz, counted by valgrind's callgrind.

Strategy: a wall-clock benchmark on a shared machine measures the neighbours as
much as the server; an instruction count does not. Each variant of sse_server
runs under ``valgrind --tool=callgrind`` (about 50x slower, so a small client
keeps it saturated, as wrk would), is warmed with a few hundred requests, has
its counters zeroed (``callgrind_control -z``), serves a fixed number of
keep-alive requests over 32 connections, and is dumped (``callgrind_control
-d``): the count divided by the requests is the cost of one request, repeatable
to about 1%. Caveat: the server runs slowly, so what a fast server shares
between requests in the same millisecond (the access log's timestamp) is paid
per request here; the figure is an upper bound for the log.

Usage (Debian: apt-get install valgrind):
    python loadtests/bench_instructions.py --variant "log-text=--log-level info" \
        --variant "log-json=--log-level info --access-log-format json"
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import HOST, REPO_ROOT, free_port

_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)
_START_TIMEOUT_S = 120.0  # python under callgrind imports slowly


async def _keep_alive(port: int, requests: int) -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for _ in range(requests):
            writer.write(_REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            length = _CONTENT_LENGTH.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
    finally:
        writer.close()
    return requests


async def _load(port: int, requests: int, connections: int) -> int:
    done = await asyncio.gather(*(_keep_alive(port, requests // connections) for _ in range(connections)))
    return sum(done)


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            asyncio.run(_load(port, 1, 1))
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server on port {port} did not answer within {_START_TIMEOUT_S:.0f} s")


def instructions_per_request(extra: list[str], requests: int, connections: int) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "sse_server",
                "--host", HOST, "--port", str(port), "--log-level", "warning", *extra]
        with open(os.path.join(tmp, "server.log"), "wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
            try:
                _wait_listening(port)
                asyncio.run(_load(port, 500, connections))  # warm-up: imports, caches, first batches
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
                served = asyncio.run(_load(port, requests, connections))
                time.sleep(0.5)  # a pending access-log batch is written inside the counted window
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        (dump,) = glob.glob(out + ".*")[:1]
        with open(dump) as f:
            found = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
        if found is None:
            raise SystemExit(f"no totals in {dump}")
        return int(found.group(1)) / served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="sse_server with ARGS appended, next to the plain one (repeatable)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH (Debian: apt-get install valgrind)")
    variants: dict[str, list[str]] = {"sse_server": []}
    for spec in args.variant:
        name, sep, extra = spec.partition("=")
        if not sep or not name:
            sys.exit(f"--variant wants NAME=ARGS, got {spec!r}")
        variants[name] = shlex.split(extra)
    counts: dict[str, float] = {}
    for name, extra in variants.items():
        counts[name] = instructions_per_request(extra, args.requests, args.connections)
        print(f"{name}: {counts[name]:,.0f} instructions/request", file=sys.stderr)
    base = counts["sse_server"]
    print(f"\nGET /healthz keep-alive, {args.requests} requests over {args.connections} connections, callgrind\n")
    print("| server | instructions/request | vs sse_server |\n|---|---|---|")
    for name, count in counts.items():
        print(f"| {name} | {count:,.0f} | {count / base:.3f}x |")


if __name__ == "__main__":
    main()
