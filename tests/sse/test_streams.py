"""Server-Sent Events over real sockets: the demo's channels, resume, heartbeats,
slow clients, disconnects and shutdown."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

import pytest

from sse_server import App, Request, Server
from sse_server.channels import MemoryEngine
from sse_server.demo import create_app
from sse_server.sse import Event
from sse_server.sse.streams import EventStream

from ..conftest import StartServer
from ..http_client import exchange
from ..sse_client import SSEClient
from ..waiting import eventually


def engine_of(server: Server) -> MemoryEngine:
    engine: MemoryEngine = server.app.state["engine"]
    return engine


async def publish(server: Server, channel: str, data: str, event: str | None = None) -> dict:
    query = f"?event={event}" if event else ""
    body = data.encode()
    raw = (
        f"POST /channels/{channel}/events{query} HTTP/1.1\r\nHost: t\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    reply = await exchange("127.0.0.1", server.port, raw)
    assert reply.status == 202, reply
    return json.loads(reply.body)


async def test_stream_headers_and_retry_hint(start_server: StartServer) -> None:
    """A subscription answers with the SSE headers at once and a retry hint first."""
    server = await start_server(create_app, retry_ms=1234)
    client = await SSEClient.connect(server.port, "/channels/a/events")
    assert client.reply.status == 200
    assert client.reply.header("content-type") == "text/event-stream; charset=utf-8"
    assert client.reply.header("cache-control") == "no-cache, no-transform"
    assert client.reply.header("x-accel-buffering") == "no"
    await publish(server, "a", "x")
    await client.take(1)
    assert client.parser.retry_ms == 1234
    await client.close()


async def test_publish_reaches_subscribers_with_ids_names_newlines_unicode(start_server: StartServer) -> None:
    """Published data with CR/LF/CRLF, U+2028 and non-ASCII arrives intact, named and with an id."""
    server = await start_server(create_app)
    a = await SSEClient.connect(server.port, "/channels/news/events")
    b = await SSEClient.connect(server.port, "/channels/news/events")
    await eventually(lambda: engine_of(server).subscriber_count("news") == 2)
    text = "line one\nline two\r\nthree\rfour \u2028 five é 漢字 🎉"
    result = await publish(server, "news", text, event="note")
    assert result["subscribers"] == 2
    for client in (a, b):
        (event,) = await client.take(1)
        assert event.data == "line one\nline two\nthree\nfour \u2028 five é 漢字 🎉"
        assert event.event == "note"
        assert event.id == result["id"]
        await client.close()


async def test_ids_increase_and_plain_events_are_messages(start_server: StartServer) -> None:
    """Each publish gets a new, increasing id; without ?event= the type is message."""
    server = await start_server(create_app)
    client = await SSEClient.connect(server.port, "/channels/seq/events")
    await eventually(lambda: engine_of(server).subscriber_count("seq") == 1)
    ids = [(await publish(server, "seq", str(i)))["id"] for i in range(5)]
    events = await client.take(5)
    assert [e.id for e in events] == ids
    assert [int(i.rsplit("-", 1)[1]) for i in ids] == [1, 2, 3, 4, 5]
    assert {e.event for e in events} == {"message"}
    await client.close()


async def test_heartbeat_on_idle(start_server: StartServer) -> None:
    """An idle stream gets a comment line after the heartbeat interval."""
    server = await start_server(create_app, heartbeat_s=0.2)
    client = await SSEClient.connect(server.port, "/channels/quiet/events")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.wait_comment(timeout=2.0)
    assert loop.time() - started >= 0.15
    await client.wait_comment(timeout=2.0)
    assert client.events == []
    await client.close()


async def test_resume_with_last_event_id_header_and_query(start_server: StartServer) -> None:
    """Last-Event-ID (header or query) replays what followed it, then goes live."""
    server = await start_server(create_app)
    ids = [(await publish(server, "r", f"m{i}"))["id"] for i in range(6)]
    for connect in (
        lambda: SSEClient.connect(server.port, "/channels/r/events", headers={"Last-Event-ID": ids[2]}),
        lambda: SSEClient.connect(server.port, f"/channels/r/events?last_event_id={ids[2]}"),
    ):
        client = await connect()
        assert client.reply.header("sse-reset") is None
        replayed = await client.take(3)
        assert [e.data for e in replayed] == ["m3", "m4", "m5"]
        await eventually(lambda: engine_of(server).subscriber_count("r") == 1)
        await publish(server, "r", "live")
        (live,) = await client.take(1)
        assert live.data == "live"
        await client.close()
        await eventually(lambda: engine_of(server).subscriber_count("r") == 0)


async def test_resume_from_latest_id_replays_nothing(start_server: StartServer) -> None:
    """A client that has everything gets no replay and then the next live event."""
    server = await start_server(create_app)
    last = (await publish(server, "up", "a"))["id"]
    client = await SSEClient.connect(server.port, "/channels/up/events", headers={"Last-Event-ID": last})
    await eventually(lambda: engine_of(server).subscriber_count("up") == 1)
    await publish(server, "up", "b")
    (event,) = await client.take(1)
    assert event.data == "b"
    await client.close()


async def test_evicted_id_gets_reset_then_retained_history(start_server: StartServer) -> None:
    """An id older than the history gets an in-band reset and a header, then what is left."""
    server = await start_server(create_app, history_size=3)
    ids = [(await publish(server, "h", f"m{i}"))["id"] for i in range(10)]
    client = await SSEClient.connect(server.port, "/channels/h/events", headers={"Last-Event-ID": ids[1]})
    assert client.reply.header("sse-reset") == "evicted"
    events = await client.take(4)
    assert events[0].event == "reset"
    notice = json.loads(events[0].data)
    assert notice["reason"] == "evicted" and notice["oldest_id"] == ids[7]
    assert [e.data for e in events[1:]] == ["m7", "m8", "m9"]
    await client.close()


async def test_unknown_ids_are_reset_never_up_to_date(start_server: StartServer) -> None:
    """Ids never issued, malformed, or from another server run are answered with a reset."""
    server = await start_server(create_app)
    issued = (await publish(server, "u", "only"))["id"]
    epoch, seq = issued.rsplit("-", 1)
    other_run = MemoryEngine().epoch
    for bogus in (f"{epoch}-{int(seq) + 5}", "garbage", f"{other_run}-1", f"{epoch}-x"):
        client = await SSEClient.connect(server.port, "/channels/u/events", headers={"Last-Event-ID": bogus})
        assert client.reply.header("sse-reset") == "unknown", bogus
        reset, replayed = await client.take(2)
        assert reset.event == "reset" and json.loads(reset.data)["reason"] == "unknown"
        assert replayed.data == "only" and replayed.id == issued
        await client.close()


async def test_ids_stay_unique_across_restarts(start_server: StartServer) -> None:
    """A restarted server issues ids that differ from the previous run's, and treats old ones as unknown."""
    first = await start_server(create_app)
    old_id = (await publish(first, "c", "before"))["id"]
    await first.shutdown()
    second = await start_server(create_app)
    new_id = (await publish(second, "c", "after"))["id"]
    assert new_id != old_id
    client = await SSEClient.connect(second.port, "/channels/c/events", headers={"Last-Event-ID": old_id})
    assert client.reply.header("sse-reset") == "unknown"
    reset, after = await client.take(2)
    assert reset.event == "reset" and after.data == "after"
    await client.close()


async def test_publish_replay_race_has_no_gap_or_duplicate(start_server: StartServer) -> None:
    """Clients resuming while events are published get every event after their id exactly once."""
    server = await start_server(create_app)
    total = 400
    published: list[str] = []

    async def publisher() -> None:
        for i in range(total):
            published.append((await publish(server, "race", str(i)))["id"])

    async def resumer(seed: int) -> None:
        rng = random.Random(seed)
        await eventually(lambda: len(published) > 5 + seed)
        start_index = rng.randrange(0, len(published))
        client = await SSEClient.connect(
            server.port, "/channels/race/events", headers={"Last-Event-ID": published[start_index]}
        )
        seen: list[int] = []
        async with asyncio.timeout(30):
            while not seen or seen[-1] != total - 1:
                seen.append(int((await client.next_event()).data))
        assert seen == list(range(start_index + 1, total))
        await client.close()

    await asyncio.gather(publisher(), *(resumer(s) for s in range(8)))


async def test_frozen_reader_is_dropped_and_others_unaffected(start_server: StartServer) -> None:
    """A subscriber that stops reading is cut off at its budget; the others get everything, and it resumes."""
    # History holds all 300 events (the default per-channel bytes would keep ~250 of them).
    server = await start_server(create_app, max_subscriber_buffer_bytes=64 * 1024, history_bytes=32 * 1024 * 1024)
    frozen = await SSEClient.connect(server.port, "/channels/f/events", rcvbuf=4096)
    readers = [await SSEClient.connect(server.port, "/channels/f/events") for _ in range(5)]
    await eventually(lambda: engine_of(server).subscriber_count("f") == 6)
    payload = "x" * 16_000
    n = 300  # ~4.8 MB: far past the frozen client's socket buffers and its budget
    counts = [0] * len(readers)

    async def drain(i: int, client: SSEClient) -> None:
        while counts[i] < n:
            await client.next_event()
            counts[i] += 1

    drains = [asyncio.create_task(drain(i, c)) for i, c in enumerate(readers)]
    broker = engine_of(server)
    last_id = ""
    for i in range(n):
        last_id = broker.publish_nowait("f", f"{i}:{payload}").id
        await asyncio.sleep(0)  # let the readers' tasks run, as real publishes would
    async with asyncio.timeout(30):
        await asyncio.gather(*drains)
    assert counts == [n] * len(readers)
    assert broker.dropped == 1
    assert broker.subscriber_count("f") == 5
    # The frozen client wakes up: it reads what reached it, then finds the stream cut.
    got = []
    try:
        async with asyncio.timeout(10):
            while True:
                got.append(await frozen.next_event())
    except EOFError:
        pass
    assert 0 < len(got) < n
    # It resumes from the last id it saw and gets the rest, exactly once.
    resumed = await SSEClient.connect(server.port, "/channels/f/events", headers={"Last-Event-ID": got[-1].id})
    first_missing = int(got[-1].data.split(":", 1)[0]) + 1
    rest = await resumed.take(n - first_missing)
    assert [int(e.data.split(":", 1)[0]) for e in rest] == list(range(first_missing, n))
    assert rest[-1].id == last_id
    for c in (*readers, frozen, resumed):
        await c.close()


async def test_disconnect_leaves_channel(start_server: StartServer) -> None:
    """A subscriber that closes its socket is removed from the channel promptly."""
    server = await start_server(create_app)
    clients = [await SSEClient.connect(server.port, "/channels/d/events") for _ in range(3)]
    await eventually(lambda: engine_of(server).subscriber_count("d") == 3)
    await clients[0].close()
    await eventually(lambda: engine_of(server).subscriber_count("d") == 2, timeout_s=2)
    result = await publish(server, "d", "x")
    assert result["subscribers"] == 2
    for c in clients[1:]:
        await c.close()
    await eventually(lambda: not server.streams, timeout_s=2)


def producer_app(state: dict) -> App:
    app = App()
    state["cancelled"] = asyncio.Event()
    state["started"] = asyncio.Event()

    @app.route("/ticks", methods=["GET", "POST"])
    async def ticks(request: Request) -> EventStream:
        body = await request.json() if request.method == "POST" else {"n": 1}

        async def produce() -> AsyncIterator[Event | str | dict]:
            try:
                yield Event("hello", event="greeting", id="1")
                yield {"echo": body}
                state["started"].set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                state["cancelled"].set()
                raise

        return EventStream(produce())

    @app.route("/broken")
    async def broken(request: Request) -> EventStream:
        async def produce() -> AsyncIterator[str]:
            yield "one"
            raise RuntimeError("producer failed on purpose")

        return EventStream(produce())

    return app


async def test_client_leaving_cancels_the_producer(start_server: StartServer) -> None:
    """Closing the connection cancels an iterator producer at once."""
    state: dict = {}
    server = await start_server(producer_app(state))
    client = await SSEClient.connect(server.port, "/ticks")
    first, second = await client.take(2)
    assert (first.event, first.data, first.id) == ("greeting", "hello", "1")
    assert json.loads(second.data) == {"echo": {"n": 1}}
    await asyncio.wait_for(state["started"].wait(), 5)
    await client.close()
    await asyncio.wait_for(state["cancelled"].wait(), 2)


async def test_post_stream_for_fetch_clients(start_server: StartServer) -> None:
    """A POST with a JSON body gets an event stream, as fetch-based clients use."""
    state: dict = {}
    server = await start_server(producer_app(state))
    client = await SSEClient.connect(
        server.port, "/ticks", method="POST", body=b'{"prompt": "hi"}',
        headers={"Content-Type": "application/json"},
    )
    assert client.reply.status == 200
    _, echoed = await client.take(2)
    assert json.loads(echoed.data) == {"echo": {"prompt": "hi"}}
    await client.close()


async def test_producer_error_cuts_the_stream_visibly(start_server: StartServer, caplog) -> None:
    """A producer that raises cuts the stream without its last chunk (it is not complete) and
    shows the client no traceback."""
    server = await start_server(producer_app({}))
    client = await SSEClient.connect(server.port, "/broken")
    events = await client.read_until_end()
    assert [e.data for e in events] == ["one"]
    assert client.ended and not client.complete
    failures = [r for r in caplog.records if "producer failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None  # logged once, with the traceback
    await client.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /broken HTTP/1.1\r\nHost: t\r\n\r\n")
    async with asyncio.timeout(5):
        raw = await reader.read(-1)  # everything until the server cuts the connection
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and not raw.endswith(b"0\r\n\r\n")
    assert b"Traceback" not in raw and b"RuntimeError" not in raw


async def test_http10_subscriber_gets_close_delimited_stream(start_server: StartServer) -> None:
    """An HTTP/1.0 client gets the stream without chunked framing."""
    server = await start_server(create_app)
    client = await SSEClient.connect(server.port, "/channels/old/events", version="1.0")
    assert client.reply.header("transfer-encoding") is None
    assert client.reply.header("connection") == "close"
    await eventually(lambda: engine_of(server).subscriber_count("old") == 1)
    await publish(server, "old", "a\nb")
    (event,) = await client.take(1)
    assert event.data == "a\nb"
    await client.close()


async def test_shutdown_sends_jittered_retry_and_ends_streams(start_server: StartServer) -> None:
    """On shutdown every stream gets a final retry within the jitter window, then ends."""
    server = await start_server(create_app, retry_ms=1000, shutdown_retry_jitter_ms=4000)
    clients = [await SSEClient.connect(server.port, "/channels/s/events") for _ in range(20)]
    await eventually(lambda: engine_of(server).subscriber_count("s") == 20)
    async with asyncio.timeout(5):
        await server.shutdown()
    retries = []
    for c in clients:
        await c.read_until_end(timeout=5)
        assert c.complete  # a channel stream cut by shutdown ends cleanly, after its retry
        retries.append(c.parser.retry_ms)
        await c.close()
    assert all(1000 <= r <= 5000 for r in retries)
    assert len(set(retries)) > 1  # spread out, not one value for everyone
    assert engine_of(server).subscriber_count("s") == 0 and not server.connections
    with pytest.raises(OSError):  # stopped: nothing listens any more
        await asyncio.open_connection(server.host, server.port)


async def test_firehose_sends_exactly_n_events(start_server: StartServer) -> None:
    """/firehose sends n events of size bytes with increasing ids, then ends."""
    server = await start_server(create_app)
    client = await SSEClient.connect(server.port, "/firehose?n=5000&size=100")
    events = await client.read_until_end(timeout=20)
    assert len(events) == 5000
    assert all(len(e.data) == 100 for e in events)
    assert [e.id for e in events[:3]] == ["1", "2", "3"] and events[-1].id == "5000"
    await client.close()


async def test_firehose_rejects_bad_parameters(start_server: StartServer) -> None:
    """Non-numeric or out-of-range firehose parameters are a 400, not a crash."""
    server = await start_server(create_app)
    for query in ("n=abc", "n=-1", "size=99999999999", "n=1e3"):
        reply = await exchange(
            "127.0.0.1", server.port, f"GET /firehose?{query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        assert reply.status == 400, query


async def test_publish_rejects_event_name_with_newline(start_server: StartServer) -> None:
    """An event name that would inject a field (CR/LF) is refused with 400 and nothing is stored."""
    server = await start_server(create_app)
    raw = (b"POST /channels/x/events?event=a%0Adata:evil HTTP/1.1\r\n"
           b"Host: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz")
    reply = await exchange("127.0.0.1", server.port, raw)
    assert reply.status == 400
    assert engine_of(server).history_after("x", 0).events == []


async def test_churning_subscribers_get_every_event_once_in_order(start_server: StartServer) -> None:
    """Subscribers that drop (FIN or reset) and resume with Last-Event-ID see each event exactly once, in order."""
    server = await start_server(create_app)
    broker = engine_of(server)
    total = 600

    async def publisher() -> None:
        # Every subscriber is in before the first publish, so "every event" is well defined.
        await eventually(lambda: broker.subscriber_count("churn") == 20)
        for i in range(total):
            broker.publish_nowait("churn", str(i))
            if i % 10 == 0:
                await asyncio.sleep(0.002)

    async def subscriber(seed: int) -> list[int]:
        rng = random.Random(seed)
        seen: list[int] = []
        last_id: str | None = None
        async with asyncio.timeout(30):
            while not seen or seen[-1] != total - 1:
                headers = {"Last-Event-ID": last_id} if last_id else {}
                client = await SSEClient.connect(server.port, "/channels/churn/events", headers=headers)
                for _ in range(rng.randint(1, 40)):
                    try:
                        event = await asyncio.wait_for(client.next_event(), 2)
                    except TimeoutError:
                        break  # nothing more was published
                    seen.append(int(event.data))
                    last_id = event.id
                    if seen[-1] == total - 1:
                        break
                if rng.random() < 0.3:
                    client.writer.transport.abort()  # vanish with a reset, not a goodbye
                else:
                    await client.close()
        return seen

    publishing = asyncio.create_task(publisher())
    results = await asyncio.gather(*(subscriber(s) for s in range(20)))
    await publishing
    for seen in results:
        assert seen == list(range(total))


# -- several channels on one stream ------------------------------------------------------


async def test_events_carries_several_channels_tagged_and_resumes_them_all(start_server: StartServer) -> None:
    """GET /events tags each id with its channel; its last id resumes every channel, then live."""
    server = await start_server(create_app)
    client = await SSEClient.connect(server.port, "/events?channel=a&channel=b&channel=a")
    await eventually(lambda: engine_of(server).subscriber_count("a") == 1 == engine_of(server).subscriber_count("b"))
    sent = [(await publish(server, ch, f"{ch}{i}", event="note" if ch == "b" else None))["id"]
            for i, ch in enumerate("abba")]
    got = await client.take(4)
    assert [(e.id, e.event, e.data) for e in got] == [
        (f"{sent[0]};a", "message", "a0"), (f"{sent[1]};b", "note", "b1"),
        (f"{sent[2]};b", "note", "b2"), (f"{sent[3]};a", "message", "a3"),
    ]
    await client.close()
    missed = [(await publish(server, ch, f"{ch}-missed"))["id"] for ch in "ba"]
    await publish(server, "c", "not followed")
    resumed = await SSEClient.connect(server.port, "/events?channel=a&channel=b", headers={"Last-Event-ID": got[1].id})
    assert resumed.reply.header("sse-reset") is None
    replay = await resumed.take(4)
    assert [e.id for e in replay] == [f"{sent[2]};b", f"{sent[3]};a", f"{missed[0]};b", f"{missed[1]};a"]
    await eventually(lambda: engine_of(server).subscriber_count("b") == 1)
    live = (await publish(server, "b", "live"))["id"]
    assert [e.id for e in await resumed.take(1)] == [f"{live};b"]
    await resumed.close()


async def test_events_refuses_too_many_no_or_bad_channel_names(start_server: StartServer) -> None:
    """More channels than --max-channels-per-stream, none, or a name with a control character: 400."""
    server = await start_server(create_app, max_channels_per_stream=3)
    for target in ("/events?channel=a&channel=b&channel=c&channel=d", "/events", "/events?channel=a%0Ab",
                   "/channels/a%00b/events", "/events?channel="):
        reply = await exchange("127.0.0.1", server.port, f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert reply.status == 400, target
    assert engine_of(server).channel_count == 0  # nothing was made for a refused stream
    ok = await SSEClient.connect(server.port, "/events?channel=a&channel=b&channel=c")
    assert ok.reply.status == 200
    await ok.close()


async def test_full_channel_table_refuses_a_new_channel_with_503(start_server: StartServer) -> None:
    """When every channel has subscribers, a new one is a 503 with Retry-After and nobody is orphaned."""
    server = await start_server(create_app, max_channels=2)
    a = await SSEClient.connect(server.port, "/channels/a/events")
    b = await SSEClient.connect(server.port, "/channels/b/events")
    await eventually(lambda: engine_of(server).subscriber_count("b") == 1)
    for raw in (b"GET /channels/c/events HTTP/1.1\r\nHost: t\r\n\r\n",
                b"POST /channels/c/events HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"):
        reply = await exchange("127.0.0.1", server.port, raw)
        assert reply.status == 503 and reply.header("retry-after") == "5", raw
    published = await publish(server, "a", "still served")
    assert published["subscribers"] == 1 and (await a.take(1))[0].data == "still served"
    await a.close()
    await b.close()


async def test_forgotten_channel_never_reuses_ids_and_old_ids_get_a_reset(start_server: StartServer) -> None:
    """A channel the LRU forgot and that is published to again gets new ids; a client with an old id is reset."""
    server = await start_server(create_app, max_channels=2)
    old = (await publish(server, "news", "before"))["id"]
    await publish(server, "x", "1")
    await publish(server, "y", "2")  # forgets "news"
    new = (await publish(server, "news", "after"))["id"]
    assert new != old
    client = await SSEClient.connect(server.port, "/channels/news/events", headers={"Last-Event-ID": old})
    assert client.reply.header("sse-reset") == "evicted"
    reset, after = await client.take(2)
    assert reset.event == "reset" and json.loads(reset.data)["channel"] == "news"
    assert (after.id, after.data) == (new, "after")
    await client.close()


# -- bounded under attack ----------------------------------------------------------------


async def test_an_event_too_large_once_encoded_is_413_and_nobody_is_cut(start_server: StartServer) -> None:
    """A legal 1 MB body of newlines (6 MB encoded) is refused with 413 before anything changes."""
    server = await start_server(create_app, max_body_bytes=2 * 1024 * 1024)
    client = await SSEClient.connect(server.port, "/channels/big/events")
    await eventually(lambda: engine_of(server).subscriber_count("big") == 1)
    body = b"\n" * 1_000_000
    raw = (b"POST /channels/big/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    reply = await exchange("127.0.0.1", server.port, raw)
    assert reply.status == 413 and b"limit" in reply.body
    assert engine_of(server).history_after("big", 0).events == []
    assert engine_of(server).subscriber_count("big") == 1
    await publish(server, "big", "small")
    assert [e.data for e in await client.take(1)] == ["small"]
    await client.close()


async def test_an_event_as_large_as_the_budget_keeps_a_reading_subscriber(start_server: StartServer) -> None:
    """An accepted event never disconnects a subscriber that is keeping up, however large."""
    server = await start_server(create_app, max_subscriber_buffer_bytes=256 * 1024, max_event_bytes=1024 * 1024,
                                max_body_bytes=2 * 1024 * 1024)
    client = await SSEClient.connect(server.port, "/channels/wide/events")
    await eventually(lambda: engine_of(server).subscriber_count("wide") == 1)
    await publish(server, "wide", "y" * 900_000)
    (event,) = await client.take(1)
    assert len(event.data) == 900_000 and engine_of(server).dropped == 0
    await client.close()


async def test_a_resuming_client_that_never_reads_pins_its_socket_not_its_backlog(start_server: StartServer) -> None:
    """Replay goes out as the socket drains: a stalled resumer holds little, others stay prompt,
    and once it reads it gets the whole backlog exactly once."""
    server = await start_server(create_app, history_bytes=64 * 1024 * 1024)
    ids = [(await publish(server, "deep", f"{i}:" + "z" * 4000))["id"] for i in range(500)]  # ~2 MB
    stalled = await SSEClient.connect(server.port, "/channels/deep/events", headers={"Last-Event-ID": f"{ids[0]}"},
                                      rcvbuf=4096)
    await eventually(lambda: any(not ex.transport.is_closing() and ex.buffered_bytes() > 0
                                 for ex in server.streams))
    (exchange_,) = server.streams
    assert exchange_.buffered_bytes() <= 64 * 1024 + 8 * 1024  # one high-water mark and one event
    async with asyncio.timeout(2):
        assert (await exchange("127.0.0.1", server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")).status == 200
    await publish(server, "deep", "499+1")  # arrives while it catches up: queued behind the replay
    got = await stalled.take(500)
    assert [e.id for e in got] == ids[1:] + [got[-1].id] and got[-1].data == "499+1"
    await publish(server, "deep", "live")
    assert [e.data for e in await stalled.take(1)] == ["live"]
    await stalled.close()


async def test_a_reset_notice_does_not_echo_a_huge_id(start_server: StartServer) -> None:
    """The reset notice quotes at most 200 characters of the id the client sent."""
    server = await start_server(create_app)
    await publish(server, "echo", "x")
    client = await SSEClient.connect(server.port, "/channels/echo/events", headers={"Last-Event-ID": "z" * 5000})
    (reset, _) = await client.take(2)
    assert reset.event == "reset" and json.loads(reset.data)["last_event_id"] == "z" * 200
    await client.close()
