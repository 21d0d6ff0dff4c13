"""Channel auth on the demo, over real sockets: who may publish and subscribe, and when a stream ends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import pytest

from sse_server import Server
from sse_server.auth import Principal, mint_token
from sse_server.clients import client_key
from sse_server.demo import create_app
from sse_server.middleware.auth import AuthError

from ..conftest import StartServer
from ..http_client import Reply, exchange
from ..logs import access_lines, capture
from ..sse_client import SSEClient
from ..waiting import eventually

SECRET = "a-test-secret-of-more-than-32-bytes!"
ENV = "SSE_TEST_JWT_SECRET"


def token(publish: list[str] | None = None, subscribe: list[str] | None = None, *, exp_s: float | None = 60,
          sub: str | None = "alice", secret: str = SECRET) -> str:
    return mint_token(secret, publish=publish or [], subscribe=subscribe or [], exp_s=exp_s, sub=sub)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(alg: str, claims: dict[str, Any], digest: Any = hashlib.sha256) -> str:
    head = f"{b64(json.dumps({'alg': alg}).encode())}.{b64(json.dumps(claims).encode())}"
    if alg == "none":
        return head + "."
    return f"{head}.{b64(hmac.new(SECRET.encode(), head.encode(), digest).digest())}"


@pytest.fixture
async def server(start_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv(ENV, SECRET)
    return await start_server(create_app, jwt_secret_env=ENV, public_channels=("public/*", "lobby"),
                              jwt_leeway_s=0.0, retry_ms=-1, access_log=False)


async def publish(server: Server, channel: str, bearer: str | None, body: bytes = b"hi") -> Reply:
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer is not None else ""
    raw = (f"POST /channels/{channel}/events HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {len(body)}\r\n"
           "Connection: close\r\n\r\n").encode() + body
    return await exchange("127.0.0.1", server.port, raw)


async def get(server: Server, target: str, headers: dict[str, str] | None = None) -> Reply:
    """The head of a GET (a stream's body is not waited for)."""
    client = await SSEClient.connect(server.port, target, headers=headers)
    await client.close()
    return client.reply


now = time.time()
PUBLISH_CASES = [
    ("no token", None, "news", 401),
    ("bad signature", token(["news"], secret="another-secret-of-more-than-32-bytes"), "news", 401),
    ("alg none", forged("none", {"publish": ["news"]}), "news", 401),
    ("alg HS512", forged("HS512", {"publish": ["news"]}, hashlib.sha512), "news", 401),
    ("alg RS256", forged("RS256", {"publish": ["news"]}), "news", 401),
    ("expired", forged("HS256", {"publish": ["news"], "exp": now - 1}), "news", 401),
    ("not yet valid", forged("HS256", {"publish": ["news"], "nbf": now + 600}), "news", 401),
    ("garbage", "not-a-token", "news", 401),
    ("wrong channel", token(["sports"]), "news", 403),
    ("subscribe does not grant publish", token(subscribe=["*"]), "news", 403),
    ("public does not grant publish", None, "lobby", 401),
    ("exact", token(["news"]), "news", 202),
    ("pattern", token(["orders/*"]), "orders%2Feu%2F7", 202),  # the name is orders/eu/7
    ("pattern is a prefix only", token(["orders/*"]), "orders", 403),
    ("star", token(["*"]), "anything", 202),
]


@pytest.mark.parametrize(("bearer", "channel", "status"), [c[1:] for c in PUBLISH_CASES],
                         ids=[c[0] for c in PUBLISH_CASES])
async def test_publish_needs_a_token_covering_the_channel(server: Server, bearer: str | None, channel: str,
                                                          status: int) -> None:
    """No or bad token: 401 with a Bearer challenge; a valid one not covering the channel: 403; else 202."""
    reply = await publish(server, channel, bearer)
    assert reply.status == status, reply.body
    if status == 401:
        assert (reply.header("www-authenticate") or "").startswith("Bearer")
    if status == 403:
        assert 'error="insufficient_scope"' in (reply.header("www-authenticate") or "")


async def test_a_bad_token_says_why(server: Server) -> None:
    """The 401 for a refused token names the fault (expired, alg), as RFC 6750's invalid_token."""
    reply = await publish(server, "news", forged("HS256", {"publish": ["news"], "exp": time.time() - 1}))
    assert b"expired" in reply.body
    assert reply.header("www-authenticate") == 'Bearer error="invalid_token"'
    reply = await publish(server, "news", forged("none", {"publish": ["news"]}))
    assert b"only HS256" in reply.body


SUBSCRIBE_CASES = [
    ("no token", "/channels/news/events", {}, 401),
    ("public channel, no token", "/channels/lobby/events", {}, 200),
    ("public pattern, no token", "/channels/public%2Fx/events", {}, 200),
    ("public channel, bad token", "/channels/lobby/events", {"Authorization": "Bearer junk"}, 200),
    ("header", "/channels/news/events", {"Authorization": f"Bearer {token(subscribe=['news'])}"}, 200),
    ("cookie", "/channels/news/events", {"Cookie": f"theme=dark; sse_token={token(subscribe=['news'])}"}, 200),
    ("query", f"/channels/news/events?access_token={token(subscribe=['news'])}", {}, 200),
    ("wrong channel", "/channels/news/events", {"Authorization": f"Bearer {token(subscribe=['sports'])}"}, 403),
    ("publish does not grant subscribe", "/channels/news/events",
     {"Authorization": f"Bearer {token(publish=['*'])}"}, 403),
    ("pattern", "/channels/orders%2F1/events", {"Authorization": f"Bearer {token(subscribe=['orders/*'])}"}, 200),
    ("star", "/channels/x/events", {"Authorization": f"Bearer {token(subscribe=['*'])}"}, 200),
    ("expired", "/channels/news/events",
     {"Authorization": f"Bearer {forged('HS256', {'subscribe': ['news'], 'exp': now - 1})}"}, 401),
    ("many, all covered", "/events?channel=news&channel=orders/1",
     {"Authorization": f"Bearer {token(subscribe=['news', 'orders/*'])}"}, 200),
    ("many, covered or public", "/events?channel=news&channel=lobby",
     {"Authorization": f"Bearer {token(subscribe=['news'])}"}, 200),
    ("many, all public", "/events?channel=lobby&channel=public/a", {}, 200),
    ("many, one not covered", "/events?channel=news&channel=sports",
     {"Authorization": f"Bearer {token(subscribe=['news'])}"}, 403),
    ("many, one private, no token", "/events?channel=lobby&channel=news", {}, 401),
]


@pytest.mark.parametrize(("target", "headers", "status"), [c[1:] for c in SUBSCRIBE_CASES],
                         ids=[c[0] for c in SUBSCRIBE_CASES])
async def test_subscribe_needs_coverage_of_every_private_channel(server: Server, target: str,
                                                                 headers: dict[str, str], status: int) -> None:
    """A stream opens only if every channel it names is public or covered by the token's subscribe."""
    reply = await get(server, target, headers)
    assert reply.status == status
    if status == 200:
        assert reply.header("content-type") == "text/event-stream; charset=utf-8"


async def test_a_stream_ends_cleanly_when_its_token_expires(server: Server) -> None:
    """A subscription gets events until its token's exp, then its body ends with a clean last chunk."""
    exp = time.time() + 1.5
    bearer = forged("HS256", {"subscribe": ["news"], "exp": exp})
    forever = await SSEClient.connect(server.port, "/channels/news/events",
                                      headers={"Authorization": f"Bearer {token(subscribe=['news'], exp_s=None)}"})
    client = await SSEClient.connect(server.port, f"/channels/news/events?access_token={bearer}")
    assert client.reply.status == 200
    engine = server.app.state["engine"]
    await eventually(lambda: engine.subscriber_count("news") == 2)
    assert (await publish(server, "news", token(["news"]), b"before")).status == 202
    assert [e.data for e in await client.take(1)] == ["before"]
    rest = await client.read_until_end(timeout=10)
    assert client.complete, "ended by a clean last chunk, so EventSource reconnects"
    assert time.time() >= exp - 0.05
    assert rest == []
    await eventually(lambda: engine.subscriber_count("news") == 1)
    # Reconnecting with the same (now expired, once accepted) token is refused.
    assert (await get(server, f"/channels/news/events?access_token={bearer}")).status == 401
    # The stream without exp lives on, and the server serves the next request on it.
    assert (await publish(server, "news", token(["news"]), b"after")).status == 202
    assert [e.data for e in await forever.take(2)] == ["before", "after"]
    await forever.close()
    await client.close()


async def test_streams_that_leave_are_not_held_by_the_expiry_timer(server: Server) -> None:
    """A subscriber that leaves before its token expires is freed; the timer holds it only weakly."""
    auth = server.app.state["auth"]
    clients = [await SSEClient.connect(server.port, "/channels/news/events",
                                       headers={"Authorization": f"Bearer {token(subscribe=['news'])}"})
               for _ in range(3)]
    await eventually(lambda: auth.streams_waiting == 3)
    for client in clients:
        await client.close()
    await eventually(lambda: auth.streams_waiting == 0)


async def test_the_access_log_redacts_the_query_token(start_server: StartServer, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """?access_token= shows as REDACTED in the access line, its name spelled encoded too; the rest stays."""
    monkeypatch.setenv(ENV, SECRET)
    caplog.set_level(logging.INFO, logger="sse_server.access")
    server = await start_server(create_app, jwt_secret_env=ENV, access_log=True)
    capture(server)
    secret_token = token(subscribe=["news"])
    for target in (f"/channels/news/events?access_token={secret_token}&x=1",
                   f"/channels/news/events?access%5Ftoken={secret_token}"):
        client = await SSEClient.connect(server.port, target)
        assert client.reply.status == 200  # the server read the token under both spellings
        await client.close()
    await eventually(lambda: len(access_lines(server)) == 2)
    lines = access_lines(server)
    assert "access_token=REDACTED&x=1" in lines[0]
    assert "access%5Ftoken=REDACTED" in lines[1]
    assert not any(secret_token.split(".")[2] in line for line in lines)


async def test_an_application_scheme_plugs_into_the_same_checks(start_server: StartServer) -> None:
    """create_app(authenticate=...) makes a session cookie the credential: the same 401/403/200 follow."""
    sessions = {"s1": Principal(subject="bob", publish=("bob/*",), subscribe=("bob/*",))}
    seen: list[str] = []

    async def by_session(request: Any) -> Principal | None:
        cookie = request.headers.get("cookie") or ""
        if not cookie.startswith("session="):
            return None
        principal = sessions.get(cookie.removeprefix("session="))
        if principal is None:
            raise AuthError("unknown session")
        seen.append(client_key(request))
        return principal

    # forwarded_allow_ips=(): this host is not a trusted proxy, so it is counted by its address.
    server = await start_server(lambda config: create_app(config, authenticate=by_session), access_log=False,
                                forwarded_allow_ips=())
    assert (await get(server, "/channels/bob%2Finbox/events", {"Cookie": "session=s1"})).status == 200
    assert (await get(server, "/channels/alice%2Finbox/events", {"Cookie": "session=s1"})).status == 403
    reply = await get(server, "/channels/bob%2Finbox/events", {"Cookie": "session=stale"})
    assert reply.status == 401
    assert (await get(server, "/channels/bob%2Finbox/events")).status == 401
    assert seen and seen[0] == "127.0.0.1"  # asked before it has a principal: the address


async def test_client_key_is_the_subject_once_authenticated(start_server: StartServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-client limits' key is the token's subject when the request carries one, else the address."""
    monkeypatch.setenv(ENV, SECRET)
    keys: list[str] = []

    async def record(request: Any, call_next: Any) -> Any:
        keys.append(client_key(request))
        return await call_next(request)

    def app_with_recorder(config: Any) -> Any:
        app = create_app(config)
        app.add_middleware(record)  # after the auth middleware, so it runs inside it
        return app

    server = await start_server(app_with_recorder, jwt_secret_env=ENV, public_channels=("lobby",),
                                access_log=False, forwarded_allow_ips=())
    await get(server, "/channels/news/events", {"Authorization": f"Bearer {token(subscribe=['news'], sub='carol')}"})
    await get(server, "/channels/lobby/events")
    assert keys == ["sub:carol", "127.0.0.1"]


async def test_the_expiry_heap_forgets_streams_that_left() -> None:
    """Under churn with long tokens the timer's heap stays within twice the live streams, and fires the rest."""
    from sse_server.middleware.auth import _Expiries

    class Stream:
        ended = 0

        def end(self) -> None:
            Stream.ended += 1

    expiries = _Expiries()
    keep = [Stream() for _ in range(10)]
    for s in keep:
        expiries.add(s, time.time() + 0.05)  # type: ignore[arg-type]
    for _ in range(1000):  # each leaves at once, as a churning subscriber does
        expiries.add(Stream(), time.time() + 3600)  # type: ignore[arg-type]
    assert expiries.live == 10
    assert len(expiries._heap) <= 2 * 10 + 65
    await eventually(lambda: Stream.ended == 10)
    assert expiries.live == 0


async def test_publish_rate_counts_each_subject_apart(start_server: StartServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two users behind one address have a publish budget each: the token's subject is the client."""
    monkeypatch.setenv(ENV, SECRET)
    server = await start_server(create_app, jwt_secret_env=ENV, publish_rate=0.01, publish_burst=1,
                                forwarded_allow_ips=(), access_log=False)
    alice, bob = token(["news"], sub="alice"), token(["news"], sub="bob")
    assert (await publish(server, "news", alice)).status == 202
    refused = await publish(server, "news", alice)
    assert refused.status == 429 and refused.header("retry-after")
    assert (await publish(server, "news", bob)).status == 202
