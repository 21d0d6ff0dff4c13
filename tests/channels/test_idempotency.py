"""Idempotent publishes in both engines (a real redis-server for Redis): a key is stored
once per channel within the window, across nodes, and a key reused for another event is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sse_server.channels import EncodedEvent, Engine, IdempotencyKeyReusedError, MemoryEngine

from ..redis_server import RedisServer, require_redis

MakeEngine = Callable[..., Engine]


class Recorder:
    def deliver(self, event: EncodedEvent) -> bool:
        return True

    def end(self) -> None:
        pass


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeEngine]:
    """Engines of one kind; Redis ones share one real redis-server (nodes of one deployment)."""
    engines: list[Engine] = []
    redis: RedisServer | None = None
    if request.param == "redis":
        require_redis()
        redis = RedisServer(tmp_path)
        await redis.start()

    def make(**kwargs: Any) -> Engine:
        if redis is None:
            engine: Engine = MemoryEngine(**kwargs)
        else:
            from sse_server.channels.redis import RedisEngine

            engine = RedisEngine(redis.url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()
    if redis is not None:
        redis.stop()


async def stored(engine: Engine, channel: str) -> list[str]:
    """The ids the channel's history holds, as a late subscriber replays them."""
    sub = await engine.subscribe([channel], Recorder(), from_start=True)
    engine.unsubscribe(sub)
    return [e.id for e in sub.replay]


async def test_a_retried_publish_is_stored_once_with_the_first_answer(make_engine: MakeEngine) -> None:
    """The same key on the same channel answers the first id again (replayed) and stores nothing more."""
    engine = make_engine()
    first = await engine.publish("orders", "paid", idempotency_key="k1")
    again = await engine.publish("orders", "paid", idempotency_key="k1")
    assert not first.replayed and again.replayed
    assert (again.id, again.subscribers) == (first.id, first.subscribers)
    plain = await engine.publish("orders", "paid")  # no key: always a new event
    assert await stored(engine, "orders") == [first.id, plain.id]


async def test_a_key_is_per_channel(make_engine: MakeEngine) -> None:
    """One key on two channels is two publishes; a channel name with ':' does not collide with the key."""
    engine = make_engine()
    a = await engine.publish("a:b", "x", idempotency_key="c")
    b = await engine.publish("a", "x", idempotency_key="b:c")
    c = await engine.publish("other", "x", idempotency_key="c")
    assert len({a.id, b.id, c.id}) == 3 and not (a.replayed or b.replayed or c.replayed)


async def test_a_key_reused_for_another_event_is_refused_and_stores_nothing(make_engine: MakeEngine) -> None:
    """Another body or event name under a remembered key raises IdempotencyKeyReusedError."""
    engine = make_engine()
    first = await engine.publish("c", "one", idempotency_key="k")
    with pytest.raises(IdempotencyKeyReusedError):
        await engine.publish("c", "two", idempotency_key="k")
    with pytest.raises(IdempotencyKeyReusedError):
        await engine.publish("c", "one", event="note", idempotency_key="k")
    assert await stored(engine, "c") == [first.id]


async def test_after_the_window_a_key_publishes_again(make_engine: MakeEngine) -> None:
    """A key is remembered for the window only."""
    engine = make_engine(idempotency_window_s=0.2)
    first = await engine.publish("c", "x", idempotency_key="k")
    await asyncio.sleep(0.3)  # the window passing is the behaviour under test
    later = await engine.publish("c", "x", idempotency_key="k")
    assert later.id != first.id and not later.replayed


async def test_racing_retries_on_two_nodes_store_one_event(make_engine: MakeEngine) -> None:
    """Concurrent publishes with one key, spread over two engines (nodes, for Redis), all get one id."""
    a = make_engine()
    b = a if isinstance(a, MemoryEngine) else make_engine()
    results = await asyncio.gather(*(
        (a, b)[i % 2].publish("c", "x", idempotency_key="race") for i in range(20)))
    assert len({r.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert await stored(b, "c") == [results[0].id]


async def test_the_memory_table_is_bounded_oldest_first() -> None:
    """Past idempotency_keys, the oldest key is forgotten (and then publishes again); newer ones hold."""
    engine = MemoryEngine(idempotency_keys=2)
    k1 = await engine.publish("c", "x", idempotency_key="k1")
    await engine.publish("c", "x", idempotency_key="k2")
    await engine.publish("c", "x", idempotency_key="k3")
    assert len(engine.idempotency) == 2
    assert (await engine.publish("c", "x", idempotency_key="k3")).replayed
    assert (await engine.publish("c", "x", idempotency_key="k1")).id != k1.id
