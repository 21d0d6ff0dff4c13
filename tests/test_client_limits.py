"""Per-client limits and trusted proxies on a real server: 429 with Retry-After, then OK again;
X-Forwarded-For believed from a trusted peer and ignored from another (127.0.0.2 on loopback)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import httpx
import pytest

from sse_server import App, PlainTextResponse, Request, Server
from sse_server.demo import create_app

from .conftest import StartServer, TLSFiles
from .http_client import Reply, close, read_reply
from .logs import access_lines, capture
from .waiting import eventually

OTHER = "127.0.0.2"  # another peer on loopback, not in the default --forwarded-allow-ips
NO_LIMITS = {"max_connections_per_client": 0, "connect_rate": 0.0, "publish_rate": 0.0}


def whoami_app() -> App:
    app = App()

    @app.route("/whoami")
    async def whoami(request: Request) -> PlainTextResponse:
        client = request.client[0] if request.client else "-"
        return PlainTextResponse(f"{request.scheme} {client} {'trusted' if request.client_trusted else 'limited'}")

    return app


class Client:
    """A raw keep-alive connection from a chosen local address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Server, local: str = OTHER) -> Client:
        reader, writer = await asyncio.open_connection(server.host, server.port, local_addr=(local, 0))
        return cls(reader, writer)

    async def get(self, path: str = "/whoami", headers: dict[str, str] | None = None) -> Reply:
        lines = [f"GET {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(5):
            return await read_reply(self.reader)

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(5):
            try:
                return await self.reader.read(1) == b""
            except ConnectionResetError:
                return True

    async def close(self) -> None:
        await close(self.writer)


async def get_once(server: Server, local: str = OTHER, headers: dict[str, str] | None = None) -> Reply:
    client = await Client.open(server, local)
    try:
        return await client.get(headers=headers)
    except asyncio.IncompleteReadError:
        raise AssertionError("closed without an answer") from None
    finally:
        await client.close()


async def until_ok(attempt: Callable[[], Awaitable[int]], ok: int, timeout_s: float = 5.0) -> None:
    """Retry ``attempt`` until it answers ``ok``: the limit's window has passed."""
    async with asyncio.timeout(timeout_s):
        while await attempt() != ok:
            await asyncio.sleep(0.05)


async def test_open_connections_per_client_are_capped_then_free_again(start_server: StartServer) -> None:
    """Past --max-connections-per-client a new connection gets 429 with Retry-After and is closed;
    once one of its connections ends the client may connect again; other clients are not affected."""
    server = await start_server(whoami_app(), **{**NO_LIMITS, "max_connections_per_client": 2})
    held = [await Client.open(server) for _ in range(2)]
    for client in held:
        assert (await client.get()).status == 200  # admitted, and kept open
    extra = await Client.open(server)
    refused = await extra.get()
    assert refused.status == 429 and refused.header("retry-after") == "5"
    assert refused.header("connection") == "close" and await extra.closed_by_server()
    await extra.close()
    assert (await get_once(server, "127.0.0.3")).status == 200  # another address is its own client
    assert server.open_connections_of(OTHER) == 2
    await held[0].close()
    await eventually(lambda: server.open_connections_of(OTHER) == 1, what="the closed connection is uncounted")
    assert (await get_once(server)).status == 200
    await held[1].close()


async def test_connect_rate_refuses_a_burst_then_recovers(start_server: StartServer) -> None:
    """Past --connect-burst new connections at once, a client is told 429 with Retry-After until tokens refill."""
    server = await start_server(whoami_app(), **{**NO_LIMITS, "connect_rate": 5.0, "connect_burst": 3})
    statuses = [(await get_once(server)).status for _ in range(3)]
    refused = await get_once(server)
    assert statuses == [200, 200, 200] and refused.status == 429 and refused.header("retry-after") == "1"

    async def attempt() -> int:
        return (await get_once(server)).status

    await until_ok(attempt, 200)


async def test_publish_rate_refuses_a_burst_then_recovers(start_server: StartServer) -> None:
    """Past --publish-burst publishes at once a client gets 429 with Retry-After; later it may publish again."""
    server = await start_server(create_app, **{**NO_LIMITS, "publish_rate": 4.0, "publish_burst": 2})
    transport = httpx.AsyncHTTPTransport(local_address=OTHER)
    async with httpx.AsyncClient(base_url=server.url, transport=transport) as http:
        ok = [(await http.post("/channels/rate/events", content=f"n{i}")).status_code for i in range(2)]
        refused = await http.post("/channels/rate/events", content="too many")
        assert ok == [202, 202] and refused.status_code == 429 and refused.headers["retry-after"] == "1"
        async with httpx.AsyncClient(base_url=server.url) as local:  # this host's own publisher is not limited
            assert [(await local.post("/channels/rate/events", content="x")).status_code
                    for _ in range(5)] == [202] * 5

        async def attempt() -> int:
            return (await http.post("/channels/rate/events", content="later")).status_code

        await until_ok(attempt, 202)


async def test_a_trusted_peer_is_not_limited(start_server: StartServer) -> None:
    """Connections from --forwarded-allow-ips (loopback by default) are not counted against a cap."""
    server = await start_server(whoami_app(), **{**NO_LIMITS, "max_connections_per_client": 1})
    held = [await Client.open(server, "127.0.0.1") for _ in range(3)]
    assert [(await c.get()).status for c in held] == [200, 200, 200]
    assert (await held[0].get()).body == b"http 127.0.0.1 trusted"
    for client in held:
        await client.close()


async def test_forwarded_headers_from_a_trusted_proxy_name_the_client(
    start_server: StartServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """From a trusted peer, X-Forwarded-For/-Proto and Forwarded set request.client, request.scheme and the log."""
    caplog.set_level(logging.INFO, logger="sse_server.access")  # the access log is on at INFO
    server = await start_server(whoami_app(), **NO_LIMITS, access_log=True)
    capture(server)
    xff = await get_once(server, "127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 203.0.113.7",
                                                "X-Forwarded-Proto": "https"})
    forwarded = await get_once(server, "127.0.0.1", {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'})
    assert xff.body == b"https 203.0.113.7 limited"
    assert forwarded.body == b"https 2001:db8::7 limited"
    await eventually(lambda: any(" 203.0.113.7 - \"GET " in line for line in access_lines(server)),
                     what="the access log names the forwarded client")


async def test_forwarded_headers_from_anyone_else_are_ignored(start_server: StartServer) -> None:
    """From a peer not in --forwarded-allow-ips the headers change nothing: the client is the peer."""
    server = await start_server(whoami_app(), **NO_LIMITS)
    spoofed = await get_once(server, OTHER, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                                             "Forwarded": "for=198.51.100.1;proto=https"})
    assert spoofed.body == b"http 127.0.0.2 limited"


async def test_limits_count_the_client_a_trusted_proxy_names(start_server: StartServer) -> None:
    """Behind a trusted proxy, the open-connection cap and the publish rate apply to each forwarded client."""
    server = await start_server(create_app, **{**NO_LIMITS, "max_connections_per_client": 1,
                                               "publish_rate": 1.0, "publish_burst": 1})
    alice = {"X-Forwarded-For": "203.0.113.7"}
    first = await Client.open(server, "127.0.0.1")
    assert (await first.get("/healthz", alice)).status == 200
    second = await Client.open(server, "127.0.0.1")
    refused = await second.get("/healthz", alice)
    assert refused.status == 429 and refused.header("retry-after") and await second.closed_by_server()
    await second.close()
    assert (await get_once(server, "127.0.0.1", {"X-Forwarded-For": "203.0.113.8"})).status == 404  # admitted
    await first.close()
    async with httpx.AsyncClient(base_url=server.url) as proxy:
        posts = [(await proxy.post("/channels/p/events", content="x", headers=h)).status_code
                 for h in (alice, alice, {"X-Forwarded-For": "203.0.113.8"})]
    assert posts == [202, 429, 202]


async def test_a_tls_connection_over_the_cap_is_closed_before_its_handshake(
    start_server: StartServer, tls_files: TLSFiles,
) -> None:
    """Over HTTPS a refused client gets no handshake at all (no CPU spent on it); under the cap it is served."""
    server = await start_server(whoami_app(), **{**NO_LIMITS, "max_connections_per_client": 1},
                                certfile=tls_files.certfile, keyfile=tls_files.keyfile)
    context = tls_files.client_context()
    reader, writer = await asyncio.open_connection(server.host, server.port, ssl=context,
                                                   local_addr=(OTHER, 0), server_hostname="127.0.0.1")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(server.host, server.port, ssl=context, local_addr=(OTHER, 0),
                                      server_hostname="127.0.0.1")
    writer.write(b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n")
    async with asyncio.timeout(5):
        assert (await read_reply(reader)).body == b"https 127.0.0.2 limited"
    await close(writer)
