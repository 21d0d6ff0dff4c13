"""GET /metrics on the demo: every counter moves with the action it counts, read by a Prometheus parser."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sse_server import Config, Server
from sse_server.demo import create_app
from sse_server.sse.streams import Heartbeats

from ..conftest import StartServer
from ..http_client import exchange
from ..sse_client import SSEClient
from ..waiting import eventually

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n".encode()


async def scrape(server: Server, headers: str = "") -> Scrape:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    reply = await exchange("127.0.0.1", server.port, get("/metrics", headers))
    assert reply.status == 200, reply.body
    assert reply.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.body.decode())
        for s in family.samples
    }


def value(scraped: Scrape, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def publish(server: Server, channel: str, body: str) -> str:
    reply = await exchange("127.0.0.1", server.port,
                           f"POST /channels/{channel}/events HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                           f"Connection: close\r\n\r\n{body}".encode())
    assert reply.status == 202
    return str(json.loads(reply.body)["id"])


async def test_publish_deliver_and_request_counters_move(start_server: StartServer) -> None:
    """A publish to one subscriber moves events published, deliveries, bytes sent and the gauges;
    a 404 shows as http_requests_total{method="GET",status="404"}."""
    server = await start_server(create_app, retry_ms=-1)
    before = await scrape(server)
    client = await SSEClient.connect(server.port, "/channels/m/events")
    await eventually(lambda: server.app.state["engine"].subscriber_count("m") == 1)
    live = await scrape(server)
    assert value(live, "sse_subscribers") == 1 and value(live, "sse_streams", kind="channel") == 1
    assert value(live, "sse_connections") >= 2  # the subscriber and this scrape
    await publish(server, "m", "x" * 50)
    await client.take(1)
    await exchange("127.0.0.1", server.port, get("/no/such/page"))
    after = await scrape(server)
    assert value(after, "sse_events_published_total") == value(before, "sse_events_published_total") + 1
    assert value(after, "sse_deliveries_total") == value(before, "sse_deliveries_total") + 1
    assert value(after, "sse_bytes_sent_total") > value(before, "sse_bytes_sent_total") + 50
    assert value(after, "http_requests_total", method="GET", status="404") == 1
    assert value(after, "http_requests_total", method="POST", status="202") == 1
    assert value(after, "sse_channels") >= 1
    assert value(after, "http_request_duration_seconds_count") >= 3
    await client.close()
    await eventually(lambda: not server.streams)
    ended = await scrape(server)
    assert value(ended, "sse_stream_duration_seconds_count") == 1
    assert value(ended, "http_requests_total", method="GET", status="200") >= 1
    assert value(ended, "sse_bytes_sent_total") >= value(after, "sse_bytes_sent_total")  # never goes down
    assert value(ended, "process_resident_memory_bytes") > 0 and value(ended, "process_open_fds") > 0


async def test_resumes_count_replayed_and_reset(start_server: StartServer) -> None:
    """A Last-Event-ID the history honours counts as replayed; one from another epoch as reset."""
    server = await start_server(create_app, retry_ms=-1)
    first = await publish(server, "r", "one")
    await publish(server, "r", "two")
    replayed = await SSEClient.connect(server.port, "/channels/r/events", headers={"Last-Event-ID": first})
    assert [e.data for e in await replayed.take(1)] == ["two"]
    reset = await SSEClient.connect(server.port, "/channels/r/events", headers={"Last-Event-ID": "gone-5"})
    assert reset.reply.header("sse-reset") == "unknown"
    scraped = await scrape(server)
    assert value(scraped, "sse_resumes_total", result="replayed") == 1
    assert value(scraped, "sse_resumes_total", result="reset") == 1
    await replayed.close()
    await reset.close()


async def test_slow_client_drop_and_heartbeats_count(start_server: StartServer) -> None:
    """A subscriber that stops reading is dropped over its budget and counted; idle streams' heartbeats count."""
    server = await start_server(create_app, retry_ms=-1, max_subscriber_buffer_bytes=0,
                                stream_send_buffer_bytes=4096, heartbeat_s=0.05)
    idle = await SSEClient.connect(server.port, "/channels/idle/events")
    await eventually(lambda: heartbeats_sent(server) >= 2, what="heartbeats written")
    frozen = await SSEClient.connect(server.port, "/channels/slow/events", rcvbuf=4096)
    engine = server.app.state["engine"]
    await eventually(lambda: engine.subscriber_count("slow") == 1)
    for _ in range(50):  # bounded: the drop comes once the socket buffers are full
        if engine.dropped:
            break
        await publish(server, "slow", "y" * 16_000)
    scraped = await scrape(server)
    assert value(scraped, "sse_slow_client_disconnects_total") == 1
    assert value(scraped, "sse_heartbeats_total") >= 2
    await idle.close()
    await frozen.close()


def heartbeats_sent(server: Server) -> int:
    return Heartbeats.for_loop(server.loop).sent


async def test_a_token_protects_metrics(start_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --metrics-token-env, /metrics is 401 without the bearer token (or with a wrong one), 200 with it."""
    monkeypatch.setenv("TEST_METRICS_TOKEN", "s3cret-token")
    server = await start_server(create_app, metrics_token_env="TEST_METRICS_TOKEN")
    for headers in ("", "Authorization: Bearer wrong\r\n", "Authorization: s3cret-token\r\n"):
        reply = await exchange("127.0.0.1", server.port, get("/metrics", headers))
        assert reply.status == 401 and reply.header("www-authenticate") == 'Bearer realm="metrics"', headers
    scraped = await scrape(server, "Authorization: Bearer s3cret-token\r\n")
    assert value(scraped, "http_requests_total", method="GET", status="401") == 3


async def test_a_token_variable_that_is_unset_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server told to protect its metrics with an unset variable does not start with them open."""
    monkeypatch.delenv("TEST_METRICS_TOKEN", raising=False)
    with pytest.raises(ValueError, match="TEST_METRICS_TOKEN"):
        Server(create_app(), Config(port=0, metrics_token_env="TEST_METRICS_TOKEN"))


async def test_metrics_can_be_turned_off(start_server: StartServer) -> None:
    """With --no-metrics /metrics is the app's (404 on the demo) and /status/events says why it has nothing."""
    server = await start_server(create_app, metrics=False)
    assert (await exchange("127.0.0.1", server.port, get("/metrics"))).status == 404
    assert (await exchange("127.0.0.1", server.port, get("/status/events"))).status == 503
