"""CORS on the demo, over real sockets: preflights, actual responses and streams, refused origins."""

from __future__ import annotations

import pytest

from sse_server import Server
from sse_server.demo import create_app
from sse_server.middleware.cors import check_origin

from ..conftest import StartServer
from ..http_client import Reply, exchange
from ..sse_client import SSEClient
from ..waiting import eventually

ALLOWED = "http://app.test:8080"


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server(create_app, cors_origins=(ALLOWED, "https://other.test"), access_log=False)


async def preflight(server: Server, target: str, origin: str, method: str = "POST") -> Reply:
    raw = (f"OPTIONS {target} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n"
           f"Access-Control-Request-Method: {method}\r\n"
           "Access-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n").encode()
    return await exchange("127.0.0.1", server.port, raw)


def cors_headers(reply: Reply) -> list[tuple[str, str]]:
    return [(k, v) for k, v in reply.headers if k.startswith("access-control-")]


@pytest.mark.parametrize("target", ["/channels/news/events", "/v1/chat/completions", "/chat/streams", "/no/such/route"])
async def test_a_preflight_from_an_allowed_origin_is_answered_before_routing(server: Server, target: str) -> None:
    """OPTIONS with Access-Control-Request-Method from a listed origin: 204 echoing it, with credentials."""
    reply = await preflight(server, target, ALLOWED)
    assert reply.status == 204
    assert reply.header("access-control-allow-origin") == ALLOWED
    assert reply.header("access-control-allow-credentials") == "true"
    assert "POST" in (reply.header("access-control-allow-methods") or "")
    allow_headers = {h.strip().lower() for h in (reply.header("access-control-allow-headers") or "").split(",")}
    assert {"content-type", "authorization", "last-event-id", "cache-control"} <= allow_headers
    assert int(reply.header("access-control-max-age") or 0) > 0
    assert "Origin" in reply.header_all("vary")


async def test_a_disallowed_origin_gets_no_cors_headers(server: Server) -> None:
    """Neither a preflight nor a request from an unlisted origin gets any Access-Control-* header."""
    for origin in ("http://evil.test", "http://app.test:8081", "null", ALLOWED + "/"):
        reply = await preflight(server, "/channels/news/events", origin)
        assert reply.status != 204 and cors_headers(reply) == [], origin
        client = await SSEClient.connect(server.port, "/channels/news/events", headers={"Origin": origin})
        assert client.reply.status == 200 and cors_headers(client.reply) == [], origin
        await client.close()


async def test_streams_and_plain_responses_carry_the_allow_origin_and_exposed_headers(server: Server) -> None:
    """An SSE stream and a 202 publish both name the origin and expose SSE-Reset, Chat-Stream-Id, Location."""
    client = await SSEClient.connect(server.port, "/channels/news/events?last_event_id=0-1",
                                     headers={"Origin": ALLOWED})
    assert client.reply.header("access-control-allow-origin") == ALLOWED
    assert client.reply.header("access-control-allow-credentials") == "true"
    exposed = {h.strip() for h in (client.reply.header("access-control-expose-headers") or "").split(",")}
    assert {"SSE-Reset", "Chat-Stream-Id", "Location"} <= exposed
    assert client.reply.header("sse-reset") is not None  # the header a page reads through CORS
    engine = server.app.state["engine"]
    await eventually(lambda: engine.subscriber_count("news") == 1)
    raw = (b"POST /channels/news/events HTTP/1.1\r\nHost: t\r\nOrigin: https://other.test\r\n"
           b"Content-Length: 2\r\nConnection: close\r\n\r\nhi")
    reply = await exchange("127.0.0.1", server.port, raw)
    assert reply.status == 202 and reply.header("access-control-allow-origin") == "https://other.test"
    assert "hi" in [e.data for e in await client.take(2)]
    await client.close()


async def test_star_allows_any_origin_without_credentials(start_server: StartServer) -> None:
    """With --cors-origin '*' any origin gets '*' and never Allow-Credentials (the Fetch standard forbids both)."""
    server = await start_server(create_app, cors_origins=("*",), access_log=False)
    reply = await preflight(server, "/channels/news/events", "http://anywhere.test", "GET")
    assert reply.status == 204
    assert reply.header("access-control-allow-origin") == "*"
    assert reply.header("access-control-allow-credentials") is None
    reply = await exchange("127.0.0.1", server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nOrigin: http://x.test\r\n"
                                                   b"Connection: close\r\n\r\n")
    assert reply.header("access-control-allow-origin") == "*"


async def test_without_cors_origins_nothing_changes(start_server: StartServer) -> None:
    """With no --cors-origin a preflight is routed like any OPTIONS (405) and no CORS header appears."""
    server = await start_server(create_app, access_log=False)
    reply = await preflight(server, "/channels/news/events", ALLOWED)
    assert reply.status == 405 and cors_headers(reply) == []


@pytest.mark.parametrize("origin", ["https://app.test/", "app.test", "https://app.test/x", "ftp://app.test",
                                    "https://", "https://app.test?x"])
def test_an_origin_is_scheme_host_and_port_only(origin: str) -> None:
    """--cors-origin takes the serialised origin a browser sends, nothing longer."""
    with pytest.raises(ValueError):
        check_origin(origin)
