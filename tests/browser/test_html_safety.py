"""Known script-injection payloads built with html_stream's own API and plain str values,
rendered in Chromium without a CSP (which would hide a failure): no script runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from html_stream import Document, Markup, Suspense, h
from html_stream.markup import Node
from sse_server import App, Request
from sse_server.html import stream_page

XSS = "<img src=x onerror=alert(1)>"
JS = "javascript:alert(1)"
SINK = {"target": "sink"}  # links and forms navigate the sink frame, not the page under test

PAYLOADS: list[Callable[[], Node]] = [
    lambda: h("svg", h("style", XSS)),
    lambda: h("math", h("style", XSS)),
    lambda: h("svg", h("style", "</style>" + XSS)),
    lambda: h("style", "a{}</sty", "le>" + XSS),
    lambda: h("style", Markup("a{}</sty"), Markup("le>" + XSS)),
    lambda: h("iframe", srcdoc=XSS),
    lambda: h("iframe", srcdoc="<script>alert(1)</script>"),
    lambda: h("svg", h("a", SINK, h("animate", attributeName="href", values=JS, begin="0s", fill="freeze"),
                       h("text", {"x": 10, "y": 20, "data-click": ""}, "animated link"))),
    lambda: h("svg", h("a", SINK, h("set", attributeName="xlink:href", to=" java\tscript:alert(1)", begin="0s"),
                       h("text", {"x": 10, "y": 20, "data-click": ""}, "set link"))),
    lambda: h("svg", h("a", {"xlink:href": JS, **SINK}, h("text", {"x": 10, "y": 20, "data-click": ""}, "x"))),
    lambda: h("a", {"href": JS, "data-click": "", **SINK}, "link"),
    lambda: h("a", {"href": "\x01 JaVa\nScRiPt:alert(1)", "data-click": "", **SINK}, "link"),
    lambda: h("a", {"href": "data:text/html,<script>alert(1)</script>", "data-click": "", **SINK}, "data link"),
    lambda: h("form", {"action": JS, **SINK}, h("button", {"data-click": ""}, "send")),
    lambda: h("form", SINK, h("button", {"formaction": JS, "data-click": ""}, "send")),
    lambda: h("iframe", src=JS),
    lambda: h("iframe", src="data:text/html,<script>alert(1)</script>"),
    lambda: h("object", data="data:text/html,<script>alert(1)</script>"),
    lambda: h("embed", src="data:text/html,<script>alert(1)</script>"),
    lambda: h("svg", h("script", "alert(1)")),
    lambda: h("svg", {"onload": "alert(1)"}),
    lambda: h("script", "alert(1)"),
    lambda: h("script", src="data:text/javascript,alert(1)"),
    lambda: h("svg", h("foreignObject", h("style", "</style>" + XSS))),
    lambda: h("math", h("mtext", h("style", XSS))),
    lambda: h("svg", h("p", XSS)),
    lambda: h("title", "</title>" + XSS),
    lambda: h("textarea", "</textarea>" + XSS),
    lambda: h("p", {"title": '"><svg onload=alert(1)>'}, XSS),
    lambda: h("noscript", "</noscript>" + XSS),
    lambda: h("template", XSS),
    lambda: h("svg", h("title", XSS), h("desc", "</desc>" + XSS)),
    lambda: h("div", {"onmouseover": "alert(1)", "data-click": ""}, "hover"),
]


def control() -> Node:
    """Trusted Markup that does run: proves a script would have been seen, and marks the end."""
    return h("a", {"href": Markup("javascript:alert('control')"), "id": "control", **SINK}, "control")


def corpus_page() -> Document:
    def boundary(make: Callable[[], Node]) -> Suspense:
        async def content() -> Node:
            return make()  # a payload the writer refuses becomes this boundary's error fallback

        return Suspense(content, h("span", "…"))

    return Document(title="corpus", body=[h("iframe", {"name": "sink"}), *map(boundary, PAYLOADS), control()])


async def corpus(request: Request) -> Any:
    return await stream_page(request, corpus_page(), strategy=request.query.get("strategy", ["stream"])[0])


@pytest.mark.parametrize("strategy", ["stream", "buffer"])
def test_no_payload_runs_script(page: Any, live_server: Any, strategy: str) -> None:
    """Every payload in the corpus, clicked where clickable, runs no script; the trusted control does."""
    app = App()
    app.add_route("/corpus", corpus)
    st = live_server(app)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{st.url}/corpus?strategy={strategy}")
    page.wait_for_load_state("load")
    clickable = page.locator("[data-click]").all()
    assert len(clickable) >= 8  # the links and buttons were written (neutralised), so they were tried
    for target in clickable:
        target.hover(force=True)
        target.click(force=True)
    with page.expect_event("dialog"):  # sent after every click above, so it comes last
        page.click("#control")
    assert dialogs == ["control"]
    assert page.evaluate("document.querySelectorAll('[aria-busy]').length") == 0
