"""Bytes on the wire and server CPU with and without gzip, for two streams.

- the OpenAI-compatible stream (``POST /v1/chat/completions``, ``"stream": true``) from
  the mock model with pacing off, so each token is still its own write (and, with
  gzip, its own sync flush) but the run is not waiting on a clock;
- a streamed HTML page (``GET /suspense?delays=0,...``), one flush per boundary.

One server (``--compress-sse``) on CPU 0 serves both variants; the client on CPU 1
asks with and without ``Accept-Encoding: gzip``, interleaved, ``--requests`` each per
round. Bytes are what the socket carried after the response head (chunk framing
included); CPU is the server's utime+stime from /proc over the round.

    python loadtests/bench_compression.py                    # 3 rounds of 200 requests per variant
    python loadtests/bench_compression.py --rounds 5 --requests 500
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import zlib
from collections import defaultdict

from benchlib import HOST, OUR_SERVER, ServerProcess, cpu_seconds, median

CHAT_BODY = json.dumps({
    "model": "sse-mock-1", "stream": True,
    "messages": [{"role": "user", "content": "Tell me about streaming servers and compression."}],
}).encode()


def request(port: int, raw: bytes) -> tuple[bytes, bytes]:
    """Send ``raw`` on a fresh connection; (response head, body bytes as on the wire)."""
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(raw)
        data = bytearray()
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def chat(port: int, gzip: bool) -> tuple[int, int]:
    """(wire bytes, tokens) of one streamed completion."""
    accept = b"Accept-Encoding: gzip\r\n" if gzip else b""
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n" + accept
           + b"Connection: close\r\nContent-Length: " + str(len(CHAT_BODY)).encode() + b"\r\n\r\n" + CHAT_BODY)
    head, body = request(port, raw)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert (b"content-encoding: gzip" in head.lower()) == gzip, head
    text = dechunk(body)
    if gzip:
        text = zlib.decompress(text, 31)
    tokens = sum(1 for line in text.split(b"\n")
                 if line.startswith(b"data: {") and b'"content":' in line and b'"content":""' not in line)
    return len(body), tokens


def page(port: int, gzip: bool, boundaries: int) -> tuple[int, int]:
    """(wire bytes, boundaries) of one streamed suspense page."""
    accept = b"Accept-Encoding: gzip\r\n" if gzip else b""
    delays = ",".join("0" for _ in range(boundaries))
    raw = (f"GET /suspense?delays={delays} HTTP/1.1\r\nHost: b\r\nUser-Agent: Mozilla/5.0 Chrome/120\r\n".encode()
           + accept + b"Connection: close\r\n\r\n")
    head, body = request(port, raw)
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert (b"content-encoding: gzip" in head.lower()) == gzip, head
    return len(body), boundaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="requests per variant per round")
    parser.add_argument("--boundaries", type=int, default=20, help="boundaries of the streamed page")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.load_cpu})

    server_args = ["--compress-sse", "--model-tokens-per-s", "0", "--model-first-token-ms", "0"]
    per_unit_bytes: dict[str, list[float]] = defaultdict(list)
    per_unit_cpu: dict[str, list[float]] = defaultdict(list)
    units: dict[str, str] = {}
    with ServerProcess("sse_server", OUR_SERVER, cpu=args.server_cpu, extra_args=server_args) as server:
        for rnd in range(args.rounds):
            for kind in ("chat", "html"):
                for gzip in (False, True):
                    name = f"{kind} {'gzip' if gzip else 'identity'}"
                    units[name] = "token" if kind == "chat" else "boundary"
                    before = cpu_seconds(server.pid)
                    wire = count = 0
                    for _ in range(args.requests):
                        b, n = chat(server.port, gzip) if kind == "chat" else page(server.port, gzip, args.boundaries)
                        wire += b
                        count += n
                    spent = cpu_seconds(server.pid) - before
                    per_unit_bytes[name].append(wire / count)
                    per_unit_cpu[name].append(spent / count * 1e6)
                    print(f"round {rnd + 1} {name}: {wire / count:.1f} B/{units[name]}, "
                          f"{spent / count * 1e6:.1f} µs/{units[name]}", file=sys.stderr)

    print(f"\nmedian of {args.rounds} rounds x {args.requests} requests; server on CPU {args.server_cpu}\n")
    print("| stream | encoding | wire bytes per unit | vs identity | server CPU µs per unit | vs identity |")
    print("|---|---|---|---|---|---|")
    for kind in ("chat", "html"):
        base_b = median(per_unit_bytes[f"{kind} identity"])
        base_c = median(per_unit_cpu[f"{kind} identity"])
        for enc in ("identity", "gzip"):
            name = f"{kind} {enc}"
            b, c = median(per_unit_bytes[name]), median(per_unit_cpu[name])
            label = "OpenAI stream, per token" if kind == "chat" else f"suspense page, per boundary ({args.boundaries})"
            print(f"| {label} | {enc} | {b:.1f} | {b / base_b:.2f}x | {c:.1f} | {c / base_c:.2f}x |")


if __name__ == "__main__":
    main()
