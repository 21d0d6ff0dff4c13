"""What token auth costs the app per request, measured in-process (no sockets).

Strategy: the demo app is built twice from one checkout, auth off and auth on
(``--jwt-secret-env``), and the same requests go through each app's whole
middleware stack and handler (``server.handle`` without a socket) in interleaved
rounds; CPU time per request is the median over rounds. The socket and parser
work is the same in both and is left out, so the difference is auth's alone and
a loaded machine disturbs it far less than a wrk run. Requests:

  healthz    GET /healthz (the auth middleware runs; nothing to check)
  publish    POST /channels/bench/events with a Bearer token (a cache hit after the first, check, publish)
  publish, new token   the same, each with a token never seen before: a full decode and HMAC
  subscribe  GET /channels/bench/events with a token: check, subscribe, expiry timer, leave

Usage:
    python loadtests/bench_auth.py                  # 7 rounds of 20,000 requests each
    python loadtests/bench_auth.py --rounds 11 --requests 50000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sse_server import Config, Request, Server  # noqa: E402
from sse_server.app import Headers  # noqa: E402
from sse_server.auth import mint_token  # noqa: E402
from sse_server.demo import create_app  # noqa: E402
from sse_server.sse.streams import ChannelStream  # noqa: E402

SECRET_ENV = "BENCH_AUTH_SECRET"


def make_request(server: Server, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> Request:
    async def read_body() -> bytes:
        return body

    return Request(method, path, path, "", "1.1", Headers(headers), ("127.0.0.1", 5000), read_body, server.app)


async def per_request_us(server: Server, build: Callable[[], Request], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        response = await server.handle(build())
        assert response.status < 300, response.status
        if isinstance(response, ChannelStream):
            response.close()  # the client leaves at once
    return (time.process_time() - start) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    os.environ[SECRET_ENV] = "b" * 43
    token = mint_token(os.environ[SECRET_ENV], publish=["*"], subscribe=["*"], sub="bench", exp_s=86_400)
    bearer = [("authorization", f"Bearer {token}")]
    servers = {
        # publish_rate=0: the per-client publish limit would answer most of these 429.
        "auth off": Server(create_app(off := Config(access_log=False, publish_rate=0)), off),
        "auth on": Server(create_app(on := Config(access_log=False, publish_rate=0, jwt_secret_env=SECRET_ENV)), on),
    }
    cases: dict[str, Callable[[Server], Request]] = {
        "healthz": lambda s: make_request(s, "GET", "/healthz", []),
        "publish": lambda s: make_request(s, "POST", "/channels/bench/events", bearer, b"x" * 64),
        "subscribe": lambda s: make_request(s, "GET", "/channels/bench/events", bearer),
    }
    fresh: list[list[tuple[str, str]]] = []

    def new_token(s: Server) -> Request:
        return make_request(s, "POST", "/channels/bench/events", fresh.pop(), b"x" * 64)

    cases["publish, new token"] = new_token
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for case, build in cases.items():
            for name, server in servers.items():
                if case == "publish, new token":
                    secret = os.environ[SECRET_ENV]
                    fresh[:] = [[("authorization", "Bearer " + mint_token(secret, publish=["*"], sub=f"c{i}"))]
                                for i in range(args.requests)]
                us = await per_request_us(server, lambda b=build, s=server: b(s), args.requests)  # type: ignore[misc]
                results.setdefault((case, name), []).append(us)
    print(f"\nserver CPU per request in-process, median of {args.rounds} interleaved rounds of {args.requests:,}\n")
    print("| request | auth off us | auth on us | difference us | ratio |")
    print("|---|---|---|---|---|")
    for case in cases:
        off_us = statistics.median(results[(case, "auth off")])
        on_us = statistics.median(results[(case, "auth on")])
        print(f"| {case} | {off_us:.2f} | {on_us:.2f} | {on_us - off_us:+.2f} | {on_us / off_us:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
