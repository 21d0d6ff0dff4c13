"""The hub (``--app hub``) over real sockets: its routes and nothing of the demo, auth
flags, and idempotent publishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sse_server import Server
from sse_server.auth import mint_token
from sse_server.cli import AppSpecError, build_parser, load_app
from sse_server.hub import create_app

from .conftest import StartServer
from .http_client import Reply, exchange
from .processes import start_cli
from .redis_server import RedisServer
from .sse_client import SSEClient

SECRET = "a-test-secret-of-more-than-32-bytes!"
ENV = "SSE_TEST_HUB_SECRET"


async def request(server_port: int, method: str, target: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> Reply:
    lines = [f"{method} {target} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return await exchange("127.0.0.1", server_port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


async def post(server: Server, channel: str, body: bytes, **headers: str) -> Reply:
    return await request(server.port, "POST", f"/channels/{channel}/events", body,
                         {k.replace("_", "-"): v for k, v in headers.items()})


async def test_the_hub_serves_channels_events_health_and_metrics(start_server: StartServer) -> None:
    """The hub answers publish, subscribe, /events, /healthz, /readyz and /metrics."""
    hub = await start_server(create_app)
    one = await SSEClient.connect(hub.port, "/channels/news/events")
    many = await SSEClient.connect(hub.port, "/events?channel=news&channel=other")
    assert one.reply.status == many.reply.status == 200
    reply = await post(hub, "news", b"hello")
    assert reply.status == 202
    sent = json.loads(reply.body)
    assert sent["subscribers"] == 2
    [got] = await one.take(1)
    [tagged] = await many.take(1)
    assert (got.data, got.id) == ("hello", sent["id"])
    assert (tagged.data, tagged.id) == ("hello", f"{sent['id']};news")
    for path, status in (("/healthz", 200), ("/readyz", 200), ("/metrics", 200)):
        assert (await request(hub.port, "GET", path)).status == status, path
    await one.close()
    await many.close()


DEMO_ROUTES = [("GET", p) for p in ("/", "/chat", "/v1/models", "/firehose", "/suspense", "/status",
                                     "/status/events", "/live", "/dashboard", "/favicon.ico")]
DEMO_ROUTES += [("POST", "/v1/chat/completions"), ("POST", "/chat/streams")]


async def test_the_hub_serves_no_demo_route(start_server: StartServer) -> None:
    """Every demo page and the mock model are 404 on the hub."""
    hub = await start_server(create_app)
    for method, path in DEMO_ROUTES:
        reply = await request(hub.port, method, path, b"{}" if method == "POST" else b"")
        assert reply.status == 404, (method, path, reply)


async def test_the_hubs_root_says_what_it_serves(start_server: StartServer) -> None:
    """GET / is a 404 whose text names the routes the hub does serve."""
    hub = await start_server(create_app)
    reply = await request(hub.port, "GET", "/")
    assert reply.status == 404
    assert b"/channels/{name}/events" in reply.body and b"/events?channel=" in reply.body


async def test_auth_flags_apply_on_the_hub(start_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --jwt-secret-env, the hub wants a token to publish; --public-channel opens subscribing."""
    monkeypatch.setenv(ENV, SECRET)
    hub = await start_server(create_app, jwt_secret_env=ENV, public_channels=("lobby",))
    assert (await post(hub, "lobby", b"x")).status == 401
    public = await SSEClient.connect(hub.port, "/channels/lobby/events")
    closed = await SSEClient.connect(hub.port, "/channels/secret/events")
    assert (public.reply.status, closed.reply.status) == (200, 401)
    token = mint_token(SECRET, publish=["lobby"], subscribe=[], exp_s=60, sub="backend")
    assert (await post(hub, "lobby", b"x", Authorization=f"Bearer {token}")).status == 202
    assert (await post(hub, "secret", b"x", Authorization=f"Bearer {token}")).status == 403
    [event] = await public.take(1)
    assert event.data == "x"
    await public.close()
    await closed.close()


async def test_a_retry_with_the_same_idempotency_key_is_stored_once(start_server: StartServer) -> None:
    """The same Idempotency-Key on the same channel answers the first 202 again and delivers once."""
    hub = await start_server(create_app)
    sub = await SSEClient.connect(hub.port, "/channels/orders/events")
    first = await post(hub, "orders", b"paid", Idempotency_Key="order-17")
    again = await post(hub, "orders", b"paid", Idempotency_Key='"order-17"')  # the structured-field form
    other_channel = await post(hub, "refunds", b"paid", Idempotency_Key="order-17")
    assert first.status == again.status == other_channel.status == 202
    assert again.body == first.body
    assert again.header("idempotent-replayed") == "true" and first.header("idempotent-replayed") is None
    assert json.loads(other_channel.body)["id"] != json.loads(first.body)["id"]
    after = await post(hub, "orders", b"shipped")
    [paid, shipped] = await sub.take(2)
    assert (paid.data, paid.id) == ("paid", json.loads(first.body)["id"])
    assert (shipped.data, shipped.id) == ("shipped", json.loads(after.body)["id"])
    await sub.close()


async def test_the_same_key_for_a_different_event_is_422(start_server: StartServer) -> None:
    """Reusing a key for another body or event name is refused, not silently dropped."""
    hub = await start_server(create_app)
    assert (await post(hub, "orders", b"paid", Idempotency_Key="k")).status == 202
    reply = await post(hub, "orders", b"refunded", Idempotency_Key="k")
    assert reply.status == 422 and b"Idempotency-Key" in reply.body
    named = await request(hub.port, "POST", "/channels/orders/events?event=note", b"paid", {"Idempotency-Key": "k"})
    assert named.status == 422


@pytest.mark.parametrize("key", ["", '""', "x" * 129, "has space", "tab\there", "caf\u00e9", '"unterminated'])
async def test_a_malformed_idempotency_key_is_400(start_server: StartServer, key: str) -> None:
    """An empty, over-long, non-ASCII or spaced Idempotency-Key is 400, and nothing is published."""
    hub = await start_server(create_app)
    head = f"POST /channels/c/events HTTP/1.1\r\nHost: t\r\nIdempotency-Key: {key}\r\nContent-Length: 1\r\n"
    reply = await exchange("127.0.0.1", hub.port, head.encode("utf-8") + b"Connection: close\r\n\r\nx")
    assert reply.status == 400, reply
    assert b"Idempotency-Key" in reply.body
    assert hub.app.state["engine"].published == 0


async def test_a_repeated_idempotency_key_header_is_400(start_server: StartServer) -> None:
    """Two Idempotency-Key headers are ambiguous: 400."""
    hub = await start_server(create_app)
    head = b"POST /channels/c/events HTTP/1.1\r\nHost: t\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n"
    reply = await exchange("127.0.0.1", hub.port, head + b"Content-Length: 1\r\nConnection: close\r\n\r\nx")
    assert reply.status == 400


def test_hub_is_a_built_in_app_name_in_help() -> None:
    """--help names the built-in hub; a name without ':' that is not built in says what is."""
    assert "hub" in build_parser().format_help()
    with pytest.raises(AppSpecError, match="MODULE:ATTR or one of hub, demo"):
        load_app("hubb")


@pytest.mark.redis
async def test_a_retry_on_another_node_is_answered_from_the_first(
        redis_server: RedisServer, start_server: StartServer) -> None:  # servers stop before Redis
    """With --backplane, a retry sent to node B gets node A's 202 body, and B's subscriber sees one event."""
    a = await start_server(create_app, backplane=redis_server.url)
    b = await start_server(create_app, backplane=redis_server.url)
    on_b = await SSEClient.connect(b.port, "/channels/orders/events")
    first = await post(a, "orders", b"paid", Idempotency_Key="order-17")
    retry = await post(b, "orders", b"paid", Idempotency_Key="order-17")
    assert (first.status, retry.status) == (202, 202)
    assert retry.body == first.body and retry.header("idempotent-replayed") == "true"
    assert (await post(b, "orders", b"refunded", Idempotency_Key="order-17")).status == 422
    after = await post(a, "orders", b"shipped")
    events = await on_b.take(2)
    assert [(e.data, e.id) for e in events] == [
        ("paid", json.loads(first.body)["id"]), ("shipped", json.loads(after.body)["id"])]
    await on_b.close()


async def test_python_m_sse_server_app_hub(tmp_path: Path) -> None:
    """``python -m sse_server --app hub`` serves channels and not the demo; SIGTERM ends it with 0."""
    running = await start_cli(tmp_path, "--app", "hub")
    try:
        published = await request(running.port, "POST", "/channels/n/events", b"hi", {"Idempotency-Key": "a"})
        assert published.status == 202
        assert (await request(running.port, "GET", "/chat")).status == 404
        assert (await request(running.port, "GET", "/healthz")).status == 200
    finally:
        assert await running.stop() == 0


async def test_cors_on_the_hub_lets_a_page_send_an_idempotency_key(start_server: StartServer) -> None:
    """With --cors-origin, a preflight allows Idempotency-Key and the answer exposes Idempotent-Replayed."""
    hub = await start_server(create_app, cors_origins=("https://app.test",))
    preflight = await request(hub.port, "OPTIONS", "/channels/c/events", headers={
        "Origin": "https://app.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "idempotency-key"})
    assert "idempotency-key" in (preflight.header("access-control-allow-headers") or "").lower()
    published = await post(hub, "c", b"x", Origin="https://app.test", Idempotency_Key="k")
    assert published.status == 202
    assert "idempotent-replayed" in (published.header("access-control-expose-headers") or "").lower()
