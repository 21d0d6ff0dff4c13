"""Out-of-order HTML streaming: html_stream on sse_server against React on Node.

Strategy: both servers serve the same page (page.py, react/server.mjs): 20
boundaries whose delays are a fixed permutation of 10..200 ms, each resolving
into the same <section>, each with a fallback. Each server runs alone, pinned to
CPU 0 (taskset); this client is raw asyncio on keep-alive connections, pinned
to CPU 1, and sees exactly the bytes each server sends. Per server:

1. warm-up: --warmup seconds of load on the 0 ms page (V8 compiles hot code);
2. --requests sequential GETs of the page: time to first byte, and total time
   minus the slowest boundary's delay (what the renderer adds to the wait);
3. bytes: the streamed page against the same sections written inline with no
   boundary and no fallback (GET /plain, each library's own string renderer),
   divided by 20; "marginal" subtracts a 10-boundary page to leave out what a
   page pays once (the swap runtime);
4. --concurrency clients for --duration seconds on the delayed page, then on a
   page whose delays are all 0 ms: pages/s, latency, and the server's CPU
   seconds per page from /proc (CPU-bound only in the 0 ms run).

React (pinned in react/package.json) is installed with npm on first run; without
node or npm, or with --skip-react, only our column is filled.

Usage:
    python loadtests/html/bench_html.py
    python loadtests/html/bench_html.py --requests 20 --concurrency 20 --duration 5
    python loadtests/html/bench_html.py --skip-react
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HTML_DIR = Path(__file__).resolve().parent
REACT_DIR = HTML_DIR / "react"
sys.path.insert(0, str(HTML_DIR.parent))  # benchlib.py lives in loadtests/

from benchlib import (  # noqa: E402 (found through the sys.path line above)
    OUR_SERVER,
    ChunkedDecoder,
    ServerFailed,
    ServerProcess,
    core_busy_seconds,
    cpu_seconds,
    exit_on_sigterm,
    percentile,
    pin_self,
    raise_nofile_limit,
)

HOST = "127.0.0.1"  # all traffic stays on loopback
BOUNDARIES = 20
# 10..200 ms in steps of 10, permuted (7 is coprime with 20) so boundaries finish
# out of document order. The same list goes to both servers.
DELAYS_MS = [(7 * i) % BOUNDARIES * 10 + 10 for i in range(BOUNDARIES)]
ZERO_DELAYS_MS = [0] * BOUNDARIES
REQUEST_TIMEOUT_S = 10.0  # one page; the slowest boundary takes 0.2 s
MAX_HEAD_BYTES = 64 * 1024
NPM_INSTALL_TIMEOUT_S = 600

SERVERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (command template, extra args)
    "html_stream": (OUR_SERVER, ("--app", "loadtests.html.page:app")),
    "React": (("node", str(REACT_DIR / "server.mjs"), "{port}"), ()),
}


def page_path(route: str, delays_ms: list[int]) -> str:
    return f"/{route}?delays={','.join(map(str, delays_ms))}"


def section_markup(i: int, delay_ms: int) -> bytes:
    """What boundary i must resolve to, byte for byte, on both servers."""
    return (
        f'<section id="section-{i}" class="card"><h2>Section {i}</h2>'
        f"<p>Resolved after {delay_ms} ms.</p></section>"
    ).encode()


# --------------------------------------------------------------------------- client


@dataclass(slots=True)
class Fetch:
    """One response: status, seconds to its first byte and to its last, its body."""

    status: int
    ttfb_s: float
    total_s: float
    size: int
    body: bytes | None  # kept only when asked for


class PageConnection:
    """A keep-alive HTTP/1.1 connection that GETs pages and times them.

    Bodies are de-chunked (benchlib.ChunkedDecoder) or read by Content-Length;
    a response with ``Connection: close`` or a dead connection reconnects on the
    next request.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = b""

    async def get(self, path: str, *, keep_body: bool = False) -> Fetch:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await self._get(path, keep_body)
        except BaseException:
            self.close()  # a half-read response poisons the connection
            raise

    async def _get(self, path: str, keep_body: bool) -> Fetch:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            self.buf = b""
        assert self.reader is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode("latin-1")
        start = time.perf_counter()
        self.writer.write(request)
        # Left over from the previous response: at most the CRLF after "0\r\n".
        buf = self.buf.lstrip(b"\r\n") or await self._read()
        first = time.perf_counter()
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise ValueError(f"response head over {MAX_HEAD_BYTES} bytes")
            buf += await self._read()
        head, rest = buf[:end].lower(), buf[end + 4 :]
        status = int(head.split(b" ", 2)[1])
        parts: list[bytes] = []
        size = 0
        if b"\r\ntransfer-encoding: chunked" in head:
            decoder = ChunkedDecoder()
            payload = decoder.feed(rest)
            while True:
                size += len(payload)
                if keep_body:
                    parts.append(payload)
                if decoder.done:
                    break
                payload = decoder.feed(await self._read())
            self.buf = b""
        else:
            marker = head.find(b"\r\ncontent-length:")
            length = int(head[marker + 17 :].split(b"\r\n", 1)[0]) if marker >= 0 else 0
            while len(rest) < length:
                rest += await self._read()
            parts, size, self.buf = [rest[:length]], length, rest[length:]
        done = time.perf_counter()
        if b"\r\nconnection: close" in head:
            self.close()
        body = b"".join(parts) if keep_body else None
        return Fetch(status, first - start, done - start, size, body)

    async def _read(self) -> bytes:
        assert self.reader is not None
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("server closed the connection mid-response")
        return data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()  # no wait_closed: aborting mid-response is fine here
            self.writer = self.reader = None


# ---------------------------------------------------------------------- measurements

SERVER_CPU, CLIENT_CPU = 0, 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


def check_page(body: bytes, delays_ms: list[int]) -> list[str]:
    """What is wrong with a streamed page: a section missing or twice, no end."""
    problems = []
    for i, delay in enumerate(delays_ms):
        n = body.count(section_markup(i, delay))
        if n != 1:
            problems.append(f"section-{i} appears {n} times")
    if not body.rstrip().endswith(b"</html>"):
        problems.append("body does not end with </html>")
    return problems


async def sequential(port: int, path: str, n: int) -> list[Fetch]:
    """n GETs one after the other on one connection; the first keeps its body."""
    conn = PageConnection(port)
    try:
        return [await conn.get(path, keep_body=(i == 0)) for i in range(n)]
    finally:
        conn.close()


@dataclass
class LoadResult:
    pages: int = 0  # completed with 200 inside the window
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    others_server_cpu_s: float = 0.0  # what other processes took of the server's CPU
    others_client_cpu_s: float = 0.0

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.window_s if self.window_s else 0.0

    @property
    def cpu_ms_per_page(self) -> float | None:
        return 1000 * self.server_cpu_s / self.pages if self.pages else None

    def latency_ms(self, q: float) -> float | None:
        return 1000 * percentile(sorted(self.latencies_s), q) if self.latencies_s else None


async def load(port: int, pid: int, path: str, concurrency: int, duration_s: float) -> LoadResult:
    """`concurrency` clients GET `path` back to back for `duration_s`.

    Pages that end after the window are not counted; the server's CPU is read
    at the window's edges, so CPU per page is CPU in the window / pages in it.
    """
    result = LoadResult(window_s=duration_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + duration_s
    max_pages = int(duration_s * 100_000) + 1  # per client; bounds the loop if the clock stalls

    async def client() -> None:
        conn = PageConnection(port)
        try:
            for _ in range(max_pages):
                if loop.time() >= deadline:
                    break
                try:
                    fetch = await conn.get(path)
                except (OSError, TimeoutError, ValueError, IndexError):
                    result.errors += 1
                    await asyncio.sleep(0.01)  # a refused connection must not spin
                    continue
                if loop.time() > deadline:
                    break
                if fetch.status == 200:
                    result.pages += 1
                    result.latencies_s.append(fetch.total_s)
                else:
                    result.errors += 1
        finally:
            conn.close()

    async def meter() -> None:
        cpu0, mine0, busy0 = cpu_seconds(pid), time.process_time(), core_busy_seconds()
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        result.server_cpu_s = cpu_seconds(pid) - cpu0
        result.client_cpu_s = time.process_time() - mine0
        busy = [b - b0 for b, b0 in zip(core_busy_seconds(), busy0, strict=True)]  # same CPUs both times
        if len(busy) > CLIENT_CPU:
            result.others_server_cpu_s = max(0.0, busy[SERVER_CPU] - result.server_cpu_s)
            result.others_client_cpu_s = max(0.0, busy[CLIENT_CPU] - result.client_cpu_s)

    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    tasks.append(asyncio.create_task(meter()))
    _, pending = await asyncio.wait(tasks, timeout=duration_s + 2 * REQUEST_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return result


@dataclass
class ServerResult:
    ttfb_ms: float
    over_slowest_ms: float
    streamed_bytes: int
    plain_bytes: int
    marginal_bytes: float
    delayed: LoadResult
    zero: LoadResult
    problems: list[str]

    @property
    def overhead_bytes(self) -> float:
        return (self.streamed_bytes - self.plain_bytes) / BOUNDARIES


async def measure(name: str, port: int, pid: int, args: argparse.Namespace) -> ServerResult:
    zero_path = page_path("page", ZERO_DELAYS_MS)
    if args.warmup > 0:
        await load(port, pid, zero_path, args.concurrency, args.warmup)

    fetches = await sequential(port, page_path("page", DELAYS_MS), args.requests)
    problems = [f"status {f.status}" for f in fetches if f.status != 200][:3]
    assert fetches[0].body is not None
    problems += check_page(fetches[0].body, DELAYS_MS)
    sizes = {f.size for f in fetches}
    if len(sizes) > 1:
        problems.append(f"page size varies: {min(sizes)}..{max(sizes)} bytes")
    streamed = int(statistics.median(f.size for f in fetches))

    half = DELAYS_MS[: BOUNDARIES // 2]
    (plain,) = await sequential(port, page_path("plain", DELAYS_MS), 1)
    (streamed_half,) = await sequential(port, page_path("page", half), 1)
    (plain_half,) = await sequential(port, page_path("plain", half), 1)
    assert plain.body is not None
    problems += [f"/plain: {p}" for p in check_page(plain.body, DELAYS_MS)]
    marginal = ((streamed - plain.size) - (streamed_half.size - plain_half.size)) / (
        BOUNDARIES - len(half)
    )

    print(f"  {name}: {args.requests} sequential pages, {streamed:,} bytes each", file=sys.stderr)
    delayed = await load(port, pid, page_path("page", DELAYS_MS), args.concurrency, args.duration)
    print(f"  {name}: {delayed.pages_per_s:,.0f} pages/s with delays", file=sys.stderr)
    zero = await load(port, pid, zero_path, args.concurrency, args.duration)
    print(f"  {name}: {zero.pages_per_s:,.0f} pages/s with 0 ms delays", file=sys.stderr)
    for label, run in (("delayed", delayed), ("0 ms", zero)):
        if run.errors:
            problems.append(f"{label} run: {run.errors} failed requests")
        others = (
            100 * run.others_server_cpu_s / run.window_s,
            100 * run.others_client_cpu_s / run.window_s,
        )
        if max(others) > 10:
            problems.append(
                f"{label} run: other processes used {others[0]:.0f}% of the server's CPU and "
                f"{others[1]:.0f}% of the client's; rerun on a quiet machine"
            )
        if run.client_cpu_s > 0.9 * run.window_s:
            problems.append(f"{label} run: load client near 100% CPU; pages/s may be its limit")

    return ServerResult(
        ttfb_ms=1000 * statistics.median(f.ttfb_s for f in fetches),
        over_slowest_ms=statistics.median(1000 * f.total_s - max(DELAYS_MS) for f in fetches),
        streamed_bytes=streamed,
        plain_bytes=plain.size,
        marginal_bytes=marginal,
        delayed=delayed,
        zero=zero,
        problems=problems,
    )


# ------------------------------------------------------------------------ React setup


def prepare_react() -> str | None:
    """Install React with npm if needed; the reason it cannot run, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found"
    if not (REACT_DIR / "node_modules" / "react-dom" / "package.json").exists():
        print("installing React (npm install) ...", file=sys.stderr)
        cmd = ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"]
        try:
            done = subprocess.run(
                cmd,
                check=False,
                cwd=REACT_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_INSTALL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return f"npm install took over {NPM_INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            return f"npm install failed: {done.stderr.strip()[-300:]}"
    return None


def versions(with_react: bool) -> dict[str, str]:
    found = {"Python": platform.python_version()}
    if with_react:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found["Node"] = (
                subprocess.run(
                    ["node", "--version"], check=False, capture_output=True, text=True, timeout=10
                )
                .stdout.strip()
                .lstrip("v")
            )
        for package in ("react", "react-dom"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                meta = json.loads(
                    (REACT_DIR / "node_modules" / package / "package.json").read_text()
                )
                found[package] = meta["version"]
    return found


# ----------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Row:
    label: str
    better: str  # "lower" or "higher"
    get: Callable[[ServerResult], float | None]
    fmt: str = "{:,.1f}"
    ratio: bool = True


def rows(args: argparse.Namespace) -> list[Row]:
    c, slowest = args.concurrency, max(DELAYS_MS)
    return [
        Row("time to first byte, median (ms)", "lower", lambda r: r.ttfb_ms, "{:,.2f}"),
        Row(
            f"total time − slowest delay ({slowest} ms), median (ms)",
            "lower",
            lambda r: r.over_slowest_ms,
            "{:,.2f}",
        ),
        Row("page bytes, streamed", "lower", lambda r: r.streamed_bytes, "{:,.0f}"),
        Row(
            "page bytes, same sections inline (no boundaries)",
            "-",
            lambda r: r.plain_bytes,
            "{:,.0f}",
        ),
        Row("overhead bytes per boundary", "lower", lambda r: r.overhead_bytes),
        Row(
            "  of which per boundary, not per page (20 vs 10 boundaries)",
            "lower",
            lambda r: r.marginal_bytes,
        ),
        Row(
            f"pages/s, {c} clients, delays {min(DELAYS_MS)}..{slowest} ms",
            "higher",
            lambda r: r.delayed.pages_per_s,
        ),
        Row("  latency p50 (ms)", "lower", lambda r: r.delayed.latency_ms(50), "{:,.0f}"),
        Row("  latency p99 (ms)", "lower", lambda r: r.delayed.latency_ms(99), "{:,.0f}"),
        Row("  server CPU per page (ms)", "lower", lambda r: r.delayed.cpu_ms_per_page, "{:,.2f}"),
        Row(
            f"pages/s, {c} clients, all delays 0 ms (CPU-bound)",
            "higher",
            lambda r: r.zero.pages_per_s,
        ),
        Row("  latency p50 (ms)", "lower", lambda r: r.zero.latency_ms(50), "{:,.1f}"),
        Row("  server CPU per page (ms)", "lower", lambda r: r.zero.cpu_ms_per_page, "{:,.2f}"),
        Row(
            "  server CPU busy (%)",
            "-",
            lambda r: 100 * r.zero.server_cpu_s / r.zero.window_s,
            "{:,.0f}",
            ratio=False,
        ),
        Row(
            "  load client CPU busy (%)",
            "-",
            lambda r: 100 * r.zero.client_cpu_s / r.zero.window_s,
            "{:,.0f}",
            ratio=False,
        ),
        Row(
            "  other processes on the server's CPU (%)",
            "-",
            lambda r: 100 * r.zero.others_server_cpu_s / r.zero.window_s,
            "{:,.0f}",
            ratio=False,
        ),
    ]


def table(results: dict[str, ServerResult], args: argparse.Namespace) -> str:
    names = list(SERVERS)
    ours, ref = names
    lines = [
        f"| metric | {ours} | {ref} | {ours}/{ref} | better |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows(args):
        values = [row.get(results[n]) if n in results else None for n in names]
        cells = ["-" if v is None else row.fmt.format(v) for v in values]
        a, b = values
        ratio = f"{a / b:.2f}" if row.ratio and a is not None and b else "-"
        lines.append(f"| {row.label} | {cells[0]} | {cells[1]} | {ratio} | {row.better} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--requests",
        type=int,
        default=50,
        help="sequential pages per server for TTFB and total time",
    )
    p.add_argument(
        "--concurrency", type=int, default=50, help="concurrent clients in the load runs"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of each load run")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of 0 ms load before measuring"
    )
    p.add_argument("--skip-react", action="store_true", help="measure html_stream only")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 10_000 or not 1 <= args.concurrency <= 2_000:
        p.error("--requests 1..10000, --concurrency 1..2000")
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        p.error("--duration in (0, 600], --warmup in [0, 60]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    exit_on_sigterm()
    raise_nofile_limit(2 * args.concurrency + 256)
    if (os.cpu_count() or 1) > CLIENT_CPU:
        pin_self(CLIENT_CPU)  # the servers get CPU 0 (ServerProcess runs them under taskset)
    skipped: dict[str, str] = {}
    if args.skip_react:
        skipped["React"] = "--skip-react"
    elif (reason := prepare_react()) is not None:
        skipped["React"] = reason

    results: dict[str, ServerResult] = {}
    for name, (template, extra) in SERVERS.items():
        if name in skipped:
            continue
        print(f"{name} ...", file=sys.stderr)
        try:
            with ServerProcess(name, template, cpu=SERVER_CPU, extra_args=extra) as server:
                results[name] = asyncio.run(measure(name, server.port, server.pid, args))
                if not server.alive():
                    results[name].problems.append("server died during the run")
        except ServerFailed as exc:
            skipped[name] = str(exc)

    found = versions("React" not in skipped)
    print()
    print(
        f"HTML streaming benchmark, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        + ", ".join(f"{k} {v}" for k, v in found.items())
    )
    print(
        f"{BOUNDARIES} boundaries, delays (ms) {','.join(map(str, DELAYS_MS))}; "
        f"{args.requests} sequential pages; {args.concurrency} clients x {args.duration:g} s per load run; "
        f"server on CPU 0, client on CPU 1"
    )
    print()
    print(table(results, args))
    for name, result in results.items():
        for problem in result.problems:
            print(f"\nwarning: {name}: {problem}")
    for name, reason in skipped.items():
        print(f"\n{name} skipped: {reason}")


if __name__ == "__main__":
    main()
