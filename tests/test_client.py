"""sse_server.client against a real hub: publishes, kept-alive connections, retries that
store an event once (an answer lost on the way, a stalled redis-server), final errors, HTTPS."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import pytest

from sse_server import Server
from sse_server.auth import mint_token
from sse_server.client import AsyncPublisher, Published, Publisher, PublishError, RetryPolicy
from sse_server.hub import create_app

from .conftest import StartServer, TLSFiles
from .http_client import Reply, close, read_reply
from .redis_server import RedisServer
from .sse_client import SSEClient

FAST = RetryPolicy(retries=5, backoff_first_s=0.01, backoff_max_s=0.05)


class Relay:
    """A relay in front of a hub that forwards each request whole and then passes the
    answer back, or, when ``on_answer(n, reply)`` says so, drops the connection instead
    (an answer lost on the way: the hub did the work, the client never hears of it)."""

    def __init__(self, upstream_port: int, on_answer: Callable[[int, Reply], bool] = lambda n, r: False) -> None:
        self.upstream_port = upstream_port
        self.on_answer = on_answer
        self.answers: list[Reply] = []  # what the hub answered, in order
        self.connections = 0
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        async with asyncio.timeout(5):
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            for _ in range(100):  # requests on one kept-alive connection, bounded
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                up_writer.write(head + await reader.readexactly(length))
                reply = await read_reply(up_reader)
                assert reply.header("transfer-encoding") is None  # relayed as read: Content-Length only
                self.answers.append(reply)
                if self.on_answer(len(self.answers) - 1, reply):
                    writer.transport.abort()
                    return
                writer.write(reply.raw_head + reply.body)
                await writer.drain()
        finally:
            await close(up_writer)
            writer.close()


async def publish(kind: str, url: str, channel: str, data: str, **options: object) -> Published:
    """One publish with a fresh publisher of ``kind``: the sync one runs in a thread, as in a backend."""
    if kind == "sync":
        def run() -> Published:
            with Publisher(url, **options) as hub:  # type: ignore[arg-type]
                return hub.publish(channel, data)

        return await asyncio.to_thread(run)
    async with AsyncPublisher(url, **options) as hub:  # type: ignore[arg-type]
        return await hub.publish(channel, data)


@pytest.fixture
async def hub(start_server: StartServer) -> Server:
    return await start_server(create_app)


async def subscribe(server: Server, channel: str) -> SSEClient:
    client = await SSEClient.connect(server.port, f"/channels/{channel}/events")
    assert client.reply.status == 200
    return client


async def test_publish_reaches_subscribers_over_one_kept_alive_connection(hub: Server) -> None:
    """Publishes return the id subscribers see; channel and event names are escaped; one connection serves all."""
    sub = await subscribe(hub, "orders%2F17")
    async with Relay(hub.port) as relay:
        def run() -> list[Published]:
            with Publisher(relay.url) as pub:
                return [pub.publish("orders/17", f"m{i}", event="note & more") for i in range(3)]

        sent = await asyncio.to_thread(run)
    events = await sub.take(3)
    assert [(e.data, e.event, e.id) for e in events] == [(f"m{i}", "note & more", p.id) for i, p in enumerate(sent)]
    assert [p.subscribers for p in sent] == [1, 1, 1]
    assert relay.connections == 1
    await sub.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_answer_lost_on_the_way_is_retried_and_stored_once(hub: Server, kind: str) -> None:
    """The first answer never arrives; the retry carries the same key, and the subscriber sees the event once."""
    sub = await subscribe(hub, "pay")
    async with Relay(hub.port, on_answer=lambda n, reply: n == 0) as relay:
        sent = await publish(kind, relay.url, "pay", "paid", policy=FAST)
    assert [r.status for r in relay.answers] == [202, 202]
    assert sent.replayed and sent.id == json.loads(relay.answers[0].body)["id"]
    await publish(kind, f"http://127.0.0.1:{hub.port}", "pay", "next")
    events = await sub.take(2)
    assert [(e.data, e.id) for e in events] == [("paid", sent.id), ("next", events[1].id)]
    await sub.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_4xx_is_final_and_names_the_status_and_the_hubs_message(
        start_server: StartServer, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """401 (no token) and 403 (wrong channel) raise at once with the hub's reason; nothing is retried."""
    monkeypatch.setenv("SSE_TEST_HUB_SECRET", "a-test-secret-of-more-than-32-bytes!")
    hub = await start_server(create_app, jwt_secret_env="SSE_TEST_HUB_SECRET")
    async with Relay(hub.port) as relay:
        with pytest.raises(PublishError) as raised:
            await publish(kind, relay.url, "c", "x", policy=FAST)
        assert (raised.value.status, raised.value.attempts) == (401, 1)
        assert "401" in str(raised.value) and "token" in raised.value.message
        token = mint_token("a-test-secret-of-more-than-32-bytes!", publish=["c"], subscribe=[], exp_s=60)
        with pytest.raises(PublishError) as raised:
            await publish(kind, relay.url, "other", "x", policy=FAST, token=token)
        assert raised.value.status == 403
        assert (await publish(kind, relay.url, "c", "x", token=token)).id
    assert [r.status for r in relay.answers] == [401, 403, 202]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_hub_that_never_answers_fails_after_the_retries(kind: str) -> None:
    """With nothing listening, the publish raises after 1 + retries attempts, with no status."""
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PublishError) as raised:
        await publish(kind, f"http://127.0.0.1:{port}", "c", "x", policy=RetryPolicy(2, 0.01, 0.02))
    assert (raised.value.status, raised.value.attempts) == (None, 3)


async def test_https_with_the_default_context_rules(start_server: StartServer, tls_files: TLSFiles) -> None:
    """HTTPS verifies the hub's certificate: refused with the default trust, accepted with the CA given."""
    hub = await start_server(create_app, certfile=tls_files.certfile, keyfile=tls_files.keyfile)
    with pytest.raises(PublishError) as raised:
        await publish("sync", f"https://127.0.0.1:{hub.port}", "c", "x", policy=FAST)
    assert "certificate" in str(raised.value) and raised.value.attempts == 1
    for kind in ("sync", "async"):
        sent = await publish(kind, f"https://127.0.0.1:{hub.port}", "c", "x",
                             ssl_context=tls_files.client_context())
        assert sent.id


@pytest.mark.parametrize(("header", "expected"), [("3", 3.0), ("100", 30.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_is_honoured_up_to_the_cap(header: str, expected: float) -> None:
    """Retry-After in seconds or as a date is the wait, at most retry_after_max_s."""
    assert RetryPolicy(retry_after_max_s=30).delay_s(0, header) == expected


def test_without_retry_after_the_backoff_is_jittered_and_bounded() -> None:
    """Waits are random below first * 2**attempt, and never above backoff_max_s."""
    policy = RetryPolicy(backoff_first_s=0.1, backoff_max_s=1.0)
    waits = [policy.delay_s(attempt, None) for attempt in range(10) for _ in range(20)]
    assert all(0 <= w <= 1.0 for w in waits) and len(set(waits)) > 100
    assert all(policy.delay_s(0, "soon") <= 0.1 for _ in range(20))


@pytest.mark.redis
async def test_a_stalled_redis_is_waited_out_and_the_event_is_stored_once(
        redis_server: RedisServer, start_server: StartServer) -> None:  # the hub stops before Redis
    """Redis paused: the hub answers 503 with Retry-After; the client waits, retries once Redis is back,
    and the subscriber sees the event once, with the id the client got."""
    hub = await start_server(create_app, backplane=redis_server.url, backplane_timeout_s=0.25)
    sub = await subscribe(hub, "stall")
    await publish("async", f"http://127.0.0.1:{hub.port}", "warm", "x")  # Redis has the script, as in production

    def resume_on_503(n: int, reply: Reply) -> bool:
        if reply.status == 503:
            assert reply.header("retry-after") == "1"
            redis_server.resume()
        return False

    async with Relay(hub.port, on_answer=resume_on_503) as relay:
        redis_server.pause()
        sent = await publish("sync", relay.url, "stall", "paid")
    assert [r.status for r in relay.answers] == [503, 202]
    # The attempt that got 503 was queued in the stalled Redis and ran when it resumed:
    # the retry is answered from its record, not stored again.
    assert sent.replayed
    await publish("async", f"http://127.0.0.1:{hub.port}", "stall", "next")
    events = await sub.take(2, timeout=10)
    assert [(e.data, e.id) for e in events] == [("paid", sent.id), ("next", events[1].id)]
    await sub.close()
