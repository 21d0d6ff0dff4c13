"""sse_server/html.py over real sockets on 127.0.0.1: stream_page sends the shell, then
each boundary; the strategy follows the client; CSP nonces; shell errors; departures.

Every page's boundary waits on a Gate (an asyncio.Event) that the test opens, so what
the client has seen at each step is chosen, not timed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from html_stream import RUNTIME_JS, Document, Markup, Suspense, h
from sse_server import App, Request, Response, Server, StreamingResponse
from sse_server.demo import create_app
from sse_server.html import stream_page

from .conftest import StartServer
from .html_stream.domsim import El, final_tree, start_tags
from .html_stream.gates import Gate
from .http_client import close, read_body, read_head
from .waiting import eventually

BROWSER = "ExampleBrowser/1.0 (X11; Linux x86_64)"
CRAWLER = "ExampleBot/1.0 (+https://example.com/bot)"
FALLBACK = "Loading orders…"


def orders_page(gate: Gate) -> Document:
    """A page whose order rows are one boundary waiting on `gate`, with an inline style."""
    rows = gate.content(lambda: [h("tr", {"id": f"row-{i}"}, h("td", f"A-{i}")) for i in (1, 2)])
    return Document(
        title="Orders",
        head=h("style", Markup("td{padding:0}")),
        body=[h("h1", {"id": "title"}, "Orders"),
              h("table", h("tbody", Suspense(rows, h("tr", h("td", FALLBACK)))))],
    )


def broken_page() -> Document:
    raise RuntimeError("shell failed on purpose")


@dataclass
class Site:
    """A running server with the page app, and the gate of each page request so far."""

    server: Server
    gates: list[Gate] = field(default_factory=list)

    async def gate(self, index: int = 0) -> Gate:
        """The gate of the index-th page request, once its boundary has started."""
        await eventually(lambda: len(self.gates) > index and self.gates[index].started.is_set(),
                         what=f"page request {index} started its boundary")
        return self.gates[index]


def make_page_app(gates: list[Gate]) -> App:
    app = App()

    async def gated(request: Request, *, csp: bool = False) -> Response | StreamingResponse:
        gate = Gate()
        gates.append(gate)
        return await stream_page(request, orders_page(gate), csp=csp)

    @app.route("/orders")
    async def orders(request: Request) -> Response | StreamingResponse:
        return await gated(request)

    @app.route("/orders-csp")
    async def orders_csp(request: Request) -> Response | StreamingResponse:
        return await gated(request, csp=True)

    @app.route("/broken")
    async def broken(request: Request) -> Response | StreamingResponse:
        return await stream_page(request, broken_page)

    @app.route("/misplaced")
    async def misplaced(request: Request) -> Response | StreamingResponse:  # a boundary inside <script> (raw text)
        page = Document(title="t", body=h("script", Suspense(Gate().content(lambda: "x"))))
        return await stream_page(request, page)

    return app


@pytest.fixture
async def site(start_server: StartServer) -> Site:
    """The page app on a real server at 127.0.0.1:0 (server start-up is this one place)."""
    gates: list[Gate] = []
    server = await start_server(make_page_app(gates))
    return Site(server, gates)


Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@pytest.fixture
async def connect(site: Site) -> AsyncIterator[Connect]:
    """A factory of raw connections to the site; all are closed after the test."""
    writers: list[asyncio.StreamWriter] = []

    async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(site.server.host, site.server.port)
        writers.append(writer)
        return reader, writer

    yield open_one
    for writer in writers:
        if not writer.is_closing():
            await close(writer)


def page_request(path: str, user_agent: str = BROWSER, version: str = "HTTP/1.1") -> bytes:
    host = b"Host: t\r\n" if version == "HTTP/1.1" else b""
    return f"GET {path} {version}\r\n".encode() + host + f"User-Agent: {user_agent}\r\n\r\n".encode()


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body (b"" for the last chunk, whose trailer is read too)."""
    size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
    if size == 0:
        assert await reader.readuntil(b"\r\n") == b"\r\n"
        return b""
    data = await reader.readexactly(size + 2)
    assert data.endswith(b"\r\n")
    return data[:-2]


async def chunks_after(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The remaining chunks of a chunked body, up to the last chunk."""
    while chunk := await read_chunk(reader):
        yield chunk


def reset(writer: asyncio.StreamWriter) -> None:
    """Vanish the way a killed client does: an RST, not an orderly FIN."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def assert_orders_arrived(markup: bytes) -> El:
    """The final DOM has both order rows in the table and no fallback left."""
    tree = final_tree(markup)
    rows = tree.find_all("tr")
    assert [r.attrs.get("id") for r in rows] == ["row-1", "row-2"], [r.text() for r in rows]
    assert FALLBACK not in tree.text() and not [n for n in tree.iter() if isinstance(n, El) and "aria-busy" in n.attrs]
    return tree


async def test_shell_is_sent_before_a_gated_boundary_resolves(site: Site, connect: Connect) -> None:
    """A streamed page's head and shell (with the fallback) arrive while its boundary waits; the rows follow."""
    reader, writer = await connect()
    writer.write(page_request("/orders"))
    async with asyncio.timeout(5):
        head = await read_head(reader)
        assert head.status == 200 and head.header("transfer-encoding") == "chunked"
        assert head.header("content-type") == "text/html; charset=utf-8" and head.header("content-length") is None
        shell = await read_chunk(reader)
        gate = await site.gate()
        assert not gate.done.is_set()  # the shell went out with the boundary still pending
        assert FALLBACK.encode() in shell and b" data-hs=1>" in shell and b"row-1" not in shell
        first_paint = final_tree(shell + b"</body></html>")  # what the browser shows before the rows
        assert first_paint.by_id("title") is not None
        assert [r.attrs.get("aria-busy") for r in first_paint.find_all("tr")] == ["true"]
        gate.go.set()
        rest = [chunk async for chunk in chunks_after(reader)]
    assert len(rest) == 1 and b"<template>" in rest[0] and rest[0].endswith(b"</body></html>")
    assert_orders_arrived(shell + rest[0])


@pytest.mark.parametrize(
    ("user_agent", "version"),
    [pytest.param(CRAWLER, "HTTP/1.1", id="crawler"), pytest.param(BROWSER, "HTTP/1.0", id="http-1.0")],
)
async def test_crawlers_and_http10_get_the_whole_page_with_content_length(
    site: Site, connect: Connect, user_agent: str, version: str
) -> None:
    """A crawler User-Agent or an HTTP/1.0 request gets the finished page with Content-Length, no fallback."""
    reader, writer = await connect()
    writer.write(page_request("/orders", user_agent, version))
    async with asyncio.timeout(5):
        (await site.gate()).go.set()
        reply = await read_body(reader, await read_head(reader))
    assert reply.status == 200 and reply.header("transfer-encoding") is None
    assert reply.header("content-length") == str(len(reply.body))
    assert FALLBACK.encode() not in reply.body
    assert b"data-hs" not in reply.body and b"<template>" not in reply.body and b"MutationObserver" not in reply.body
    assert_orders_arrived(reply.body)
    assert reply.body.endswith(b"</body></html>")


async def test_browser_on_http11_gets_the_stream(site: Site, connect: Connect) -> None:
    """The same page to a browser User-Agent on HTTP/1.1 is chunked, with the fallback and the swap runtime."""
    reader, writer = await connect()
    writer.write(page_request("/orders", BROWSER, "HTTP/1.1"))
    async with asyncio.timeout(5):
        head = await read_head(reader)
        shell = await read_chunk(reader)
        (await site.gate()).go.set()
        rest = b"".join([chunk async for chunk in chunks_after(reader)])
    assert head.header("transfer-encoding") == "chunked" and head.header("content-length") is None
    assert FALLBACK.encode() in shell and RUNTIME_JS.encode() in shell and b"</template><!--1-->" in rest
    assert_orders_arrived(shell + rest)


async def test_csp_nonce_is_on_every_inline_script_and_style(site: Site, connect: Connect) -> None:
    """csp=True sends a Content-Security-Policy whose nonce is on every <script> and <style>, fresh per response."""
    nonces = []
    for index in range(2):
        reader, writer = await connect()
        writer.write(page_request("/orders-csp"))
        async with asyncio.timeout(5):
            head = await read_head(reader)
            shell = await read_chunk(reader)
            (await site.gate(index)).go.set()
            whole = shell + b"".join([chunk async for chunk in chunks_after(reader)])
        policy = head.header("content-security-policy")
        assert policy is not None
        found = re.search(r"script-src 'nonce-([^']+)'", policy)
        assert found and f"style-src 'nonce-{found.group(1)}'" in policy, policy
        nonce = found.group(1)
        inline = [(tag, attrs) for tag, attrs in start_tags(whole) if tag in ("script", "style")]
        # the head's <style> and the swap runtime (a swap is a comment, not a script)
        assert ("script", {"nonce": nonce}) in inline and ("style", {"nonce": nonce}) in inline
        assert f'<script nonce="{nonce}">{RUNTIME_JS}</script>'.encode() in whole
        assert all(attrs.get("nonce") == nonce for _, attrs in inline), inline
        assert_orders_arrived(whole)
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


@pytest.mark.parametrize("path", ["/broken", "/misplaced"])
async def test_error_in_the_shell_is_a_500_before_any_byte(
    site: Site, connect: Connect, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A page whose shell raises (its function, or a misplaced boundary) is answered 500, with no HTML sent."""
    reader, writer = await connect()
    with caplog.at_level(logging.ERROR, logger="sse_server"):
        writer.write(page_request(path))
        async with asyncio.timeout(5):
            raw = await reader.read(-1)  # a 500 closes the connection
    assert raw.startswith(b"HTTP/1.1 500 "), raw[:80]
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-length: " in head.lower() and b"transfer-encoding" not in head.lower()
    assert b"<" not in body and b"shell failed" not in body  # no page bytes, no exception text
    assert any(r.exc_info for r in caplog.records), "the shell's exception is logged with its traceback"


@pytest.mark.parametrize(
    ("user_agent", "leave"),
    [pytest.param(BROWSER, "close", id="streamed-page-client-closes"),
     pytest.param(CRAWLER, "reset", id="buffered-page-client-resets")],
)
async def test_client_that_leaves_cancels_pending_boundaries(
    site: Site, connect: Connect, user_agent: str, leave: str
) -> None:
    """A client that leaves while a boundary is pending (streamed or buffered page) gets that boundary cancelled."""
    reader, writer = await connect()
    writer.write(page_request("/orders", user_agent))
    async with asyncio.timeout(5):
        if user_agent == BROWSER:
            assert (await read_head(reader)).status == 200
            assert FALLBACK.encode() in await read_chunk(reader)
        gate = await site.gate()
    if leave == "reset":
        reset(writer)
    else:
        await close(writer)
    await eventually(lambda: gate.cancelled, what="the pending boundary was cancelled")
    assert not gate.done.is_set()


@pytest.mark.parametrize("path", ["/", "/live", "/chat", "/suspense?delays=0", "/dashboard"])
async def test_demo_pages_forbid_sniffing_and_cross_origin_referrers(start_server: StartServer, path: str) -> None:
    """Every demo page says nosniff and a Referrer-Policy that keeps its URL on its own origin."""
    server = await start_server(create_app, access_log=False)
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
        page = await http.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
