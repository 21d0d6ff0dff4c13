"""The Redis engine against a real redis-server: nodes sharing channels, resume across
nodes, races, a stalled and a lost Redis, readiness. Real sockets, no mocks."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sse_server import Server
from sse_server.channels import EncodedEvent, EngineUnavailableError, EventTooLargeError, parse_event_id
from sse_server.demo import create_app

from ..conftest import StartServer
from ..http_cases import get, req
from ..http_client import Reply, exchange
from ..redis_server import RedisServer, require_redis
from ..sse_client import SSEClient
from ..waiting import eventually

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    require_redis()
    async with RedisServer(tmp_path) as server:
        yield server


class Recorder:
    def __init__(self) -> None:
        self.events: list[EncodedEvent] = []
        self.ended = False

    def deliver(self, event: EncodedEvent) -> bool:
        self.events.append(event)
        return True

    def end(self) -> None:
        self.ended = True


def seq(event_id: str) -> int:
    parsed = parse_event_id(event_id)
    assert parsed is not None, event_id
    return parsed[1]


async def node(start_server: StartServer, redis: RedisServer, **config: Any) -> Server:
    return await start_server(create_app, backplane=redis.url, **config)


async def publish(server: Server, channel: str, data: str) -> Reply:
    body = data.encode()
    return await exchange(server.host, server.port, req(
        f"POST /channels/{channel}/events HTTP/1.1".encode(), b"Host: t",
        b"Content-Length: %d" % len(body), body=body))


async def subscribe(server: Server, channel: str, last_id: str | None = None) -> SSEClient:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    client = await SSEClient.connect(server.port, f"/channels/{channel}/events", headers=headers)
    assert client.reply.status == 200
    return client


async def test_two_nodes_share_a_channel_and_resume_across_nodes(
        start_server: StartServer, redis_server: RedisServer) -> None:
    """A publish on node A reaches subscribers on A and B with one id; an id from A resumes on B."""
    a, b = await node(start_server, redis_server), await node(start_server, redis_server)
    on_a, on_b = await subscribe(a, "news"), await subscribe(b, "news")
    reply = await publish(a, "news", "hello")
    assert reply.status == 202
    first_id = json.loads(reply.body)["id"]
    got_a, got_b = (await on_a.take(1))[0], (await on_b.take(1))[0]
    assert (got_a.id, got_a.data) == (got_b.id, got_b.data) == (first_id, "hello")
    later = [json.loads((await publish(a, "news", f"m{i}")).body)["id"] for i in range(3)]
    resumed = await subscribe(b, "news", first_id)
    assert resumed.reply.header("sse-reset") is None
    assert [e.id for e in await resumed.take(3)] == later
    for client in (on_a, on_b, resumed):
        await client.close()


async def test_publish_resume_race_has_no_gap_or_duplicate(redis_server: RedisServer) -> None:
    """Subscribers resuming on one node while two nodes publish get every event after their id once, in order."""
    from sse_server.channels.redis import RedisEngine

    a, b = RedisEngine(redis_server.url), RedisEngine(redis_server.url)
    try:
        first = [(await a.publish("ab"[i % 2], f"early{i}")).id for i in range(4)]
        published: list[str] = []
        done = asyncio.Event()

        async def publisher() -> None:
            for i in range(300):
                engine = (a, b)[i % 2]  # both nodes publish: one sequence in Redis
                published.append((await engine.publish("ab"[i % 3 % 2], f"during{i}")).id)
                if i % 10 == 0:
                    await asyncio.sleep(0)
            done.set()

        task = asyncio.create_task(publisher())
        resumes = []
        while not done.is_set():  # subscribe again and again, across the whole burst
            after = random.choice(first + published[-5:] if published else first)
            rec = Recorder()
            sub = await b.subscribe(["a", "b"], rec, after)
            resumes.append((after, sub, rec))
        await task
        last = published[-1]
        everything = first + published
        for after, sub, rec in resumes:
            def got(sub: Any = sub, rec: Recorder = rec) -> list[str]:
                return [e.id for e in sub.replay] + [e.id for e in rec.events]

            await eventually(lambda got=got: got()[-1:] == [last], 5, "the last event reached every subscriber")
            assert not sub.resets
            assert got() == everything[everything.index(after) + 1:]  # nothing missing, nothing twice, in order
        assert len(resumes) > 3
    finally:
        await a.close()
        await b.close()


async def test_an_event_over_the_limit_is_refused_before_anything_changes(redis_server: RedisServer) -> None:
    """Too large is refused whole: no sequence taken, nothing stored or sent."""
    from sse_server.channels.redis import RedisEngine

    engine = RedisEngine(redis_server.url, max_event_bytes=40)
    try:
        before = seq((await engine.publish("c", "x")).id)
        with pytest.raises(EventTooLargeError):
            await engine.publish("c", "y" * 30)  # fits before the id line is added, not after
        assert seq((await engine.publish("c", "z")).id) == before + 1
    finally:
        await engine.close()


async def test_stalled_redis_answers_503_keeps_streams_and_loses_nothing_accepted(
        start_server: StartServer, redis_server: RedisServer) -> None:
    """Redis stopped for 2 s: publishes get 503 + Retry-After, streams stay up, every accepted event arrives once."""
    config = {"backplane_timeout_s": 0.25, "heartbeat_s": 0.3}
    a, b = await node(start_server, redis_server, **config), await node(start_server, redis_server, **config)
    clients = [await subscribe(a, "s"), await subscribe(b, "s")]
    accepted: list[str] = []
    refused: list[Reply] = []
    stop = asyncio.Event()

    async def publisher() -> None:
        i = 0
        while not stop.is_set():
            reply = await publish((a, b)[i % 2], "s", f"e{i}")
            if reply.status == 202:
                accepted.append(json.loads(reply.body)["id"])
            else:
                refused.append(reply)
            i += 1
            await asyncio.sleep(0.01)  # paces the publisher, not a wait for state

    async def reader(client: SSEClient) -> None:
        while True:
            await client.next_event()

    readers = [asyncio.create_task(reader(c)) for c in clients]
    task = asyncio.create_task(publisher())
    await eventually(lambda: len(accepted) >= 10, 5, "publishes accepted before the stall")
    redis_server.pause()
    try:
        comments = [c.comments for c in clients]
        await eventually(lambda: len(refused) >= 3 and all(c.comments > n for c, n in zip(clients, comments,
                                                                                            strict=True)),
                         3, "publishes refused while streams get heartbeats")
        stalled = len(accepted)
        await asyncio.sleep(2.0)  # the stall itself (its length is what is tested), not a wait for state
    finally:
        redis_server.resume()
    await eventually(lambda: len(accepted) >= stalled + 10, 10, "publishes accepted again")
    stop.set()
    await task
    assert all(r.status == 503 and r.header("retry-after") for r in refused)
    # The subscription connections were given up during the stall and caught up from history after.
    assert a.app.state["engine"].reconnects >= 1 and b.app.state["engine"].reconnects >= 1
    await eventually(lambda: all(c.events and c.events[-1].id == accepted[-1] for c in clients), 10,
                     "every stream caught up")
    for t in readers:
        t.cancel()
    redis = await redis_server.client()
    stored = [f"{accepted[0].split('-')[0]}-{int(i.split(b'-')[0])}" for i, _ in await redis.xrange("sse:h:s")]
    await redis.aclose()
    for client in clients:
        assert not client.ended
        ids = [e.id for e in client.events]
        assert set(accepted) <= set(ids)  # every accepted event, on both nodes
        assert ids == sorted(set(ids), key=seq)  # each once, in order
        assert ids[-len(stored):] == stored  # and nothing that was stored is missing
        await client.close()


async def test_redis_restarted_empty_gives_clients_the_explicit_reset(
        start_server: StartServer, redis_server: RedisServer) -> None:
    """Redis losing its data ends open streams; resuming with an old id gets `event: reset`, never silence."""
    config = {"backplane_timeout_s": 0.25}
    a, b = await node(start_server, redis_server, **config), await node(start_server, redis_server, **config)
    live = await subscribe(b, "r")
    old_id = json.loads((await publish(a, "r", "before")).body)["id"]
    assert (await live.take(1))[0].id == old_id
    await redis_server.restart()
    replies: list[Reply] = []

    async def accepted() -> bool:
        replies.append(await publish(a, "r", "after"))
        return replies[-1].status == 202

    async with asyncio.timeout(10):
        while not await accepted():
            pass
    new_id = json.loads(replies[-1].body)["id"]
    assert parse_event_id(new_id)[0] != parse_event_id(old_id)[0]  # type: ignore[index]
    rest = await live.read_until_end(10)  # the stream on B ends; its client reconnects with its id
    assert old_id not in [e.id for e in rest]
    resumed = await subscribe(b, "r", old_id)
    assert resumed.reply.header("sse-reset") == "unknown"
    first = (await resumed.take(1))[0]
    assert first.event == "reset" and json.loads(first.data)["reason"] == "unknown"
    await resumed.close()
    await live.close()


async def test_readyz_follows_the_backplane(start_server: StartServer, redis_server: RedisServer) -> None:
    """/readyz is 200 while Redis answers, 503 while it is down, 200 again after; /healthz stays 200."""
    server = await node(start_server, redis_server, backplane_timeout_s=0.25)

    async def status(path: bytes) -> int:
        return (await exchange(server.host, server.port, get(path))).status

    codes: list[int] = []

    async def poll(want: int) -> None:
        async with asyncio.timeout(10):
            while (code := await status(b"/readyz")) != want:
                codes.append(code)

    await poll(200)
    redis_server.stop()
    await poll(503)
    assert await status(b"/healthz") == 200
    await redis_server.start()
    await poll(200)


async def test_publish_to_an_unreachable_backplane_raises_unavailable(redis_server: RedisServer) -> None:
    """With Redis gone, a publish fails within the timeout, as EngineUnavailableError (not stored)."""
    from sse_server.channels.redis import RedisEngine

    engine = RedisEngine(redis_server.url, timeout_s=0.25)
    try:
        await engine.publish("c", "x")
        redis_server.stop()
        with pytest.raises(EngineUnavailableError):
            async with asyncio.timeout(2):
                await engine.publish("c", "y")
    finally:
        await engine.close()


async def test_expired_channel_resets_an_old_id(redis_server: RedisServer) -> None:
    """A channel whose keys expired gives an id older than the ttl a reset, not silence."""
    from sse_server.channels.redis import RedisEngine

    engine = RedisEngine(redis_server.url, history_ttl_s=1)
    redis = await redis_server.client()
    try:
        old = (await engine.publish("gone", "x")).id
        await engine.publish("gone", "y")  # the event the client holding `old` has not seen
        async with asyncio.timeout(5):
            while await redis.exists("sse:h:gone"):
                await asyncio.sleep(0.05)  # polling Redis's own expiry
        sub = await engine.subscribe(["gone"], Recorder(), old)
        assert [r.reason for r in sub.resets] == ["evicted"]
    finally:
        await redis.aclose()
        await engine.close()
