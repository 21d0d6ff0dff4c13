"""The Redis engine under a burst: more commands at once than it keeps connections to
Redis. Behind a load balancer a node takes hundreds of subscribes and publishes in the
same moment; they queue for a connection instead of failing as "Too many connections"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sse_server.channels import parse_event_id

from ..redis_server import RedisServer, require_redis

pytestmark = pytest.mark.redis

BURST = 300  # above redis-py's default pool size (100 connections in redis-py 8)


async def test_a_burst_of_publishes_is_stored_not_refused(tmp_path: Path) -> None:
    """300 publishes started at once on one node are all stored, each with its own id."""
    require_redis()
    from sse_server.channels.redis import RedisEngine

    async with RedisServer(tmp_path) as redis:
        engine = RedisEngine(redis.url)
        try:
            async with asyncio.timeout(20):
                published = await asyncio.gather(*(engine.publish("burst", f"e{i}") for i in range(BURST)))
        finally:
            await engine.close()
    seqs = sorted(parsed[1] for p in published if (parsed := parse_event_id(p.id)) is not None)
    assert len(set(seqs)) == BURST
