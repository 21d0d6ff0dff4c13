"""The chat model's two numbers: what the relay adds to time-to-first-token, and
inter-token delay with 1,000 concurrent streamed completions in one process.

Strategy. Servers run as their own processes pinned to CPU 0 (benchlib.ServerProcess);
this load generator pins itself to CPU 1 and speaks raw asyncio, so it sees the bytes
as they arrive and costs little.

1. TTFT (``ttft``). A mock server with ``--model-first-token-ms 0`` and a relay server
   (``--upstream`` = the mock) in front of it. Each trial opens a connection (not timed),
   sends ``POST /v1/chat/completions`` with ``"stream": true`` and ``max_tokens: 1``, and
   times from the request's write to the arrival of the first content chunk. Direct and
   relayed trials alternate so drift hits both alike; the report is the medians and
   their difference, which is the relay's cost: its parse of the request, a new
   upstream connection, and one more hop for the chunk.

2. Concurrency (``concurrent``). One mock server paced at ``--tokens-per-s``. N clients
   each open a connection and stream one completion of ``--max-tokens`` tokens; every
   content chunk's arrival time is recorded per stream. The report is the distribution
   of gaps between consecutive tokens of a stream against the configured interval,
   the time to first token, the peak number of streams live at once, and the server's
   CPU use. Chunks that arrive in one read count as arriving together (a gap of 0), so
   batching by the server shows up as gaps near 0 and gaps near 2x the interval.

Usage:
    python loadtests/bench_llm.py                          # both parts
    python loadtests/bench_llm.py ttft --trials 1000
    python loadtests/bench_llm.py concurrent --streams 1000 --tokens-per-s 20 --max-tokens 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

from benchlib import (
    HOST,
    OUR_SERVER,
    ServerProcess,
    cpu_seconds,
    exit_on_sigterm,
    median,
    percentile,
    pin_self,
    raise_nofile_limit,
    rss_kib,
)

MODEL = "sse-mock-1"
MESSAGES = [{"role": "user", "content": "How do I keep streaming answers fast and safe?"}]
CONTENT = b'"delta":{"content":'  # a content chunk; the role chunk's delta starts with "role"
DONE = b"data: [DONE]"


def completion_request(max_tokens: int) -> bytes:
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": max_tokens}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


# -- 1. time to first token, direct vs relayed -----------------------------------------------


async def one_ttft(port: int, request: bytes) -> float:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        seen = b""
        start = time.perf_counter()
        writer.write(request)
        while CONTENT not in seen:
            piece = await reader.read(65536)
            if not piece:
                raise RuntimeError(f"stream ended before a token: {seen[-300:]!r}")
            seen += piece
        ttft = time.perf_counter() - start
        while DONE not in seen:  # read to the end: the generation finishes cleanly
            piece = await reader.read(65536)
            if not piece:
                break
            seen += piece
        return ttft
    finally:
        writer.close()


async def ttft_trials(direct_port: int, relay_port: int, trials: int, warmup: int) -> dict[str, list[float]]:
    request = completion_request(1)
    for _ in range(warmup):
        await one_ttft(direct_port, request)
        await one_ttft(relay_port, request)
    results: dict[str, list[float]] = {"direct": [], "relay": []}
    for _ in range(trials):
        results["direct"].append(await one_ttft(direct_port, request))
        results["relay"].append(await one_ttft(relay_port, request))
    return results


def run_ttft(args: argparse.Namespace) -> None:
    mock_args = ["--model-first-token-ms", "0", "--model-tokens-per-s", "0"]
    with ServerProcess("mock", OUR_SERVER, cpu=0, extra_args=mock_args) as mock:
        relay_args = ["--upstream", f"http://{HOST}:{mock.port}/v1"]
        with ServerProcess("relay", OUR_SERVER, cpu=0, extra_args=relay_args) as relay:
            results = asyncio.run(ttft_trials(mock.port, relay.port, args.trials, args.warmup))
    direct = sorted(x * 1000 for x in results["direct"])
    relayed = sorted(x * 1000 for x in results["relay"])
    paired = sorted((r - d) * 1000 for d, r in zip(results["direct"], results["relay"], strict=True))
    print(f"\n## Time to first token, {args.trials} alternating trials (ms, loopback, first-token latency 0)\n")
    print("| path | median | p10 | p90 | p99 |")
    print("|---|---|---|---|---|")
    for name, values in (("direct to mock", direct), ("through relay", relayed)):
        print(f"| {name} | {median(values):.3f} | {percentile(values, 10):.3f} | "
              f"{percentile(values, 90):.3f} | {percentile(values, 99):.3f} |")
    print(f"\nrelay overhead: median(relay) - median(direct) = {median(relayed) - median(direct):.3f} ms; "
          f"median of paired differences = {median(paired):.3f} ms")


# -- 2. 1,000 concurrent paced streams --------------------------------------------------------


class TokenClock(asyncio.Protocol):
    """One streamed completion on its own connection; records each content chunk's arrival.

    It counts the pattern in the raw bytes (no de-chunking: an event is one chunk,
    so chunk framing never splits the pattern, and the kept tail covers a split
    between reads), which keeps the load generator's cost per token to a few
    microseconds so its own lag does not pass for the server's.
    """

    live = 0
    peak = 0

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.tail = b""  # the end of the last read: a pattern may straddle two reads
        self.status = b""
        self.times: list[float] = []
        self.sent_at = 0.0
        self.done_seen = False
        self.finished: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sent_at = self.loop.time()
        transport.write(self.request)
        TokenClock.live += 1
        TokenClock.peak = max(TokenClock.peak, TokenClock.live)

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        if not self.status:
            self.status = data[9:12]  # "HTTP/1.1 200"
        joined = self.tail + data
        count = joined.count(CONTENT)
        if count:
            self.times.extend([now] * count)
        if DONE in joined:
            self.done_seen = True
            assert self.transport is not None
            self.transport.close()
        # Keep a tail too short to hold a whole pattern, so none is counted twice.
        self.tail = joined[-(len(CONTENT) - 1):]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            TokenClock.live -= 1
            self.finished.set_result(None)


@dataclass
class Run:
    clients: list[TokenClock]
    failed: int
    wall_s: float
    ramp_s: float  # from the first connection to the last request sent
    client_cpu_s: float


async def concurrent_streams(port: int, streams: int, max_tokens: int) -> Run:
    loop = asyncio.get_running_loop()
    request = completion_request(max_tokens)
    gate = asyncio.Semaphore(200)  # connects in flight: keeps the accept backlog from overflowing
    cpu0 = time.process_time()
    start = loop.time()

    async def one() -> TokenClock | None:
        async with gate:
            try:
                _, proto = await loop.create_connection(lambda: TokenClock(request, loop), HOST, port)
            except OSError:
                return None
        return proto

    opened = [c for c in await asyncio.gather(*(one() for _ in range(streams))) if c is not None]
    async with asyncio.timeout(300):
        await asyncio.gather(*(c.finished for c in opened))
    ok = [c for c in opened if c.status == b"200"]
    ramp = max(c.sent_at for c in ok) - min(c.sent_at for c in ok)
    return Run(ok, streams - len(ok), loop.time() - start, ramp, time.process_time() - cpu0)


def table_row(measure: str, configured: str, sorted_values: list[float], mean_digits: int) -> str:
    """One Markdown row: p50, p90, p99, p99.9, max and mean of already sorted values."""
    cells = [f"{percentile(sorted_values, q):.1f}" for q in (50, 90, 99, 99.9)]
    mean = statistics.fmean(sorted_values)
    return f"| {measure} | {configured} | {' | '.join(cells)} | {sorted_values[-1]:.1f} | {mean:.{mean_digits}f} |"


def run_concurrent(args: argparse.Namespace) -> None:
    raise_nofile_limit(args.streams + 100)
    interval_ms = 1000 / args.tokens_per_s
    server_args = ["--model-tokens-per-s", str(args.tokens_per_s), "--model-first-token-ms", str(args.first_token_ms)]
    load = os.getloadavg()[0]
    with ServerProcess("mock", OUR_SERVER, cpu=0, extra_args=server_args) as server:
        cpu0 = cpu_seconds(server.pid)
        run = asyncio.run(concurrent_streams(server.port, args.streams, args.max_tokens))
        cpu = cpu_seconds(server.pid) - cpu0
        rss = rss_kib(server.pid)
    clients, failed, wall = run.clients, run.failed, run.wall_s
    gaps = sorted((b - a) * 1000 for c in clients for a, b in zip(c.times, c.times[1:], strict=False))
    # Steady state: both tokens after the last stream started, so no request parsing competes.
    steady_from = max(c.sent_at for c in clients) + args.first_token_ms / 1000
    steady = sorted((b - a) * 1000 for c in clients for a, b in zip(c.times, c.times[1:], strict=False)
                    if a >= steady_from)
    ttft = sorted((c.times[0] - c.sent_at) * 1000 for c in clients if c.times)
    complete = sum(1 for c in clients if c.done_seen)
    per_stream = sorted(len(c.times) for c in clients)
    tokens = sum(len(c.times) for c in clients)
    expected_ttft = args.first_token_ms
    print(f"\n## {args.streams} concurrent streamed completions, one server process (CPU 0)\n")
    print(f"pacing: {args.tokens_per_s:g} tokens/s (interval {interval_ms:.1f} ms), first token after "
          f"{args.first_token_ms:g} ms, {args.max_tokens} tokens per stream")
    print(f"streams: {len(clients)} opened, {failed} failed, {complete} ended with [DONE] "
          f"({per_stream[0]}..{per_stream[-1]} tokens each: the answer, cut at --max-tokens); "
          f"peak live at once: {TokenClock.peak}")
    print(f"tokens received: {tokens} in {wall:.1f} s wall ({tokens / wall:.0f} tokens/s aggregate)")
    print(f"server: {cpu:.2f} CPU-s over {wall:.1f} s ({100 * cpu / wall:.0f}% of one core), RSS {rss / 1024:.0f} MiB; "
          f"load generator: {run.client_cpu_s:.2f} CPU-s ({100 * run.client_cpu_s / wall:.0f}%)")
    print(f"requests sent over {run.ramp_s * 1000:.0f} ms; 1-min load average before the run: {load:.2f} "
          f"(above ~0.2, other processes share these CPUs and the numbers)\n")
    print("| measure | configured | p50 | p90 | p99 | p99.9 | max | mean |")
    print("|---|---|---|---|---|---|---|---|")
    print(table_row("inter-token delay (ms)", f"{interval_ms:.1f}", gaps, 2))
    print(table_row("... after ramp-up (ms)", f"{interval_ms:.1f}", steady, 2))
    print(table_row("time to first token (ms)", f"{expected_ttft:.0f}", ttft, 1))
    late = sum(1 for g in gaps if g > interval_ms * 1.5)
    print(f"\ngaps over 1.5x the interval: {late} of {len(gaps)} ({100 * late / max(len(gaps), 1):.2f}%)")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="part")
    t = sub.add_parser("ttft", help="relay overhead on time to first token")
    t.add_argument("--trials", type=int, default=500)
    t.add_argument("--warmup", type=int, default=50)
    c = sub.add_parser("concurrent", help="inter-token delay with many concurrent streams")
    c.add_argument("--streams", type=int, default=1000)
    c.add_argument("--tokens-per-s", type=float, default=20.0)
    c.add_argument("--first-token-ms", type=float, default=300.0)
    c.add_argument("--max-tokens", type=int, default=100)
    args = p.parse_args()
    exit_on_sigterm()
    pin_self(1)
    if args.part in (None, "ttft"):
        run_ttft(args if args.part else t.parse_args([]))
    if args.part in (None, "concurrent"):
        run_concurrent(args if args.part else c.parse_args([]))


if __name__ == "__main__":
    sys.exit(main())
