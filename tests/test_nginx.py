"""Nodes behind the shipped nginx config (loadtests/nginx/): real nginx, real nodes
(``python -m sse_server`` children) sharing a real redis-server.

What is proved here is what a deployment relies on: through nginx's round robin a
node can die (SIGKILL, mid-stream, while publishing goes on) and every subscriber
resumes with ``Last-Event-ID`` on the node that is left with nothing lost and
nothing twice; and the nodes see the client's address, not nginx's.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import pytest

from .conftest import TLSFiles
from .http_client import Reply, exchange
from .nginx_server import NginxServer
from .processes import Running, start_cli
from .redis_server import RedisServer, require_redis
from .sse_client import ResumingSubscriber

pytestmark = [pytest.mark.nginx]

SUBSCRIBERS = 50
EVENTS = 120  # publishes attempted; the kill comes after KILL_AFTER of them were accepted
KILL_AFTER = 30
PUBLISH_EVERY_S = 0.01
LAST = "last"  # the data of the final event, published once the others are done


async def publish(port: int, channel: str, data: str) -> Reply:
    body = data.encode()
    return await exchange("127.0.0.1", port, (
        f"POST /channels/{channel}/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body)


async def subscribers_on(node: Running) -> int:
    """The node's own count of live channel subscriptions (its /metrics gauge)."""
    reply = await exchange("127.0.0.1", node.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    m = re.search(rb"^sse_subscribers (\d+)", reply.body, re.M)
    assert m, reply.body[:200]
    return int(m.group(1))


async def test_a_node_killed_behind_nginx_loses_no_accepted_event(tmp_path: Path, tls_files: TLSFiles) -> None:
    """50 subscribers over two nodes through nginx; one node is SIGKILLed while publishing
    goes on: every client resumes on the other and has every accepted event once, in order."""
    require_redis()
    async with RedisServer(tmp_path) as redis, asyncio.timeout(45):
        nodes = [await start_cli(tmp_path, "--backplane", redis.url) for _ in range(2)]
        try:
            with NginxServer(tmp_path, [f"127.0.0.1:{n.port}" for n in nodes], tls_files) as nginx:
                subs = [ResumingSubscriber(nginx.plain_port, "/channels/fleet/events") for _ in range(SUBSCRIBERS)]
                tasks = [asyncio.create_task(s.follow(lambda e: e.data == LAST)) for s in subs]
                try:
                    await asyncio.gather(*(s.connected.wait() for s in subs))
                    spread = [await subscribers_on(n) for n in nodes]
                    assert sum(spread) == SUBSCRIBERS and min(spread) >= SUBSCRIBERS // 4, spread

                    accepted: list[str] = []
                    refused: list[int] = []
                    killed_at = None
                    for i in range(EVENTS):
                        if killed_at is None and len(accepted) == KILL_AFTER:
                            nodes[0].proc.send_signal(signal.SIGKILL)
                            killed_at = len(accepted)
                        try:
                            reply = await publish(nginx.plain_port, "fleet", f"e{i}")
                        except (OSError, asyncio.IncompleteReadError):
                            refused.append(0)
                            continue
                        if reply.status == 202:
                            accepted.append(json.loads(reply.body)["id"])
                        else:
                            refused.append(reply.status)  # not accepted: nobody may count on it
                        await asyncio.sleep(PUBLISH_EVERY_S)
                    for _ in range(20):  # the end marker, retried until it is accepted
                        reply = await publish(nginx.plain_port, "fleet", LAST)
                        if reply.status == 202:
                            accepted.append(json.loads(reply.body)["id"])
                            break
                    assert accepted and accepted[-1] != accepted[0]
                    assert len(accepted) - KILL_AFTER >= EVENTS // 2, (len(accepted), refused)
                    async with asyncio.timeout(20):
                        await asyncio.gather(*tasks)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                # The subscribers of the killed node lost their streams and came back.
                assert sum(s.drops for s in subs) >= spread[0], [s.drops for s in subs]
                for s in subs:
                    assert [e.id for e in s.events] == accepted, (s.drops, s.refused)
        finally:
            for n in nodes:
                await n.stop(signal.SIGKILL)


async def test_nodes_behind_nginx_see_the_client_address(tmp_path: Path, tls_files: TLSFiles) -> None:
    """X-Forwarded-For from the shipped config: a node logs the client's address, not nginx's."""
    node = await start_cli(tmp_path, "--log-level", "info", "--access-log-format", "json")
    try:
        with NginxServer(tmp_path, [f"127.0.0.1:{node.port}"], tls_files) as nginx:
            # The client comes from 127.0.0.7; nginx reaches the node from 127.0.0.1.
            reader, writer = await asyncio.open_connection("127.0.0.1", nginx.plain_port, local_addr=("127.0.0.7", 0))
            writer.write(b"GET /healthz?from=client HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert (await reader.read(-1)).startswith(b"HTTP/1.1 200")
            writer.close()
        await node.stop()
    finally:
        await node.stop(signal.SIGKILL)
    logged = [json.loads(line) for line in node.lines if "from=client" in line]
    assert [entry["client"] for entry in logged] == ["127.0.0.7"], node.lines
