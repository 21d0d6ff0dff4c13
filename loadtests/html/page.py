# The benchmark page for html_stream, served by sse_server; react/server.mjs serves
# the same page with React so bench_html.py can compare the two.
#
#     python -m sse_server --app loadtests.html.page:app --port 8000 --log-level warning
#     GET /page?delays=10,20,...   one boundary per delay, streamed out of order
#     GET /plain?delays=10,20,...  the same sections inline: no boundary, no fallback
#     GET /healthz
#
# Boundary i resolves after delays[i] ms into
#     <section id="section-i" class="card"><h2>Section i</h2><p>Resolved after D ms.</p></section>
# and shows <section class="card"><p class="skeleton">Loading section i…</p></section>
# until then. No CSP nonce (the React page has none either), so the bytes compare.
# `loadtests` has no __init__.py: this imports as a namespace package from the
# repository root.
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from html_stream import Document, Element, Suspense, h, render_to_string
from sse_server.app import (
    App,
    HTMLResponse,
    HTTPError,
    PlainTextResponse,
    Request,
    Response,
    StreamingResponse,
)
from sse_server.html import stream_page

__all__ = ["TITLE", "app", "page"]

TITLE = "Streaming benchmark"
MAX_BOUNDARIES = 100  # bounds the tasks one request can start
MAX_DELAY_MS = 10_000


def _section(i: int, delay_ms: int) -> Element:
    return h(
        "section",
        {"id": f"section-{i}", "class": "card"},
        h("h2", f"Section {i}"),
        h("p", f"Resolved after {delay_ms} ms."),
    )


def _fallback(i: int) -> Element:
    return h("section", {"class": "card"}, h("p", {"class": "skeleton"}, f"Loading section {i}…"))


def _after(delay_ms: int, i: int) -> Callable[[], Awaitable[Element]]:
    async def content() -> Element:
        await asyncio.sleep(delay_ms / 1000)
        return _section(i, delay_ms)

    return content


def page(delays_ms: list[int], *, streamed: bool = True) -> Document:
    """The benchmark page; streamed=False writes every section inline (no boundary)."""
    sections: list[Suspense] | list[Element]
    if streamed:
        sections = [Suspense(_after(d, i), _fallback(i)) for i, d in enumerate(delays_ms)]
    else:
        sections = [_section(i, d) for i, d in enumerate(delays_ms)]
    return Document(title=TITLE, body=[h("h1", TITLE), h("div", {"class": "cards"}, sections)])


def _delays(request: Request) -> list[int]:
    raw = request.query_param("delays", "") or ""
    try:
        delays = [int(d) for d in raw.split(",") if d.strip()]
    except ValueError:
        raise HTTPError(400, "delays must be comma-separated integers (ms)") from None
    if not 1 <= len(delays) <= MAX_BOUNDARIES or not all(0 <= d <= MAX_DELAY_MS for d in delays):
        raise HTTPError(400, f"delays: 1 to {MAX_BOUNDARIES} values, each 0..{MAX_DELAY_MS} ms")
    return delays


app = App()


@app.route("/healthz")
async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


@app.route("/page")
async def streamed(request: Request) -> Response | StreamingResponse:
    return await stream_page(request, page(_delays(request)), strategy="stream")


@app.route("/plain")
async def plain(request: Request) -> HTMLResponse:
    html = await render_to_string(page(_delays(request), streamed=False), strategy="buffer")
    return HTMLResponse(html)
