"""Chromium over gzip (streamed HTML, EventSource) and the live /status page."""

from __future__ import annotations

import json
import time
from typing import Any

from sse_server import HTMLResponse
from sse_server.demo import create_app

from .test_suspense import RECORD_SECTIONS

ES_PAGE = """<!doctype html><meta charset="utf-8"><title>es</title>
<script>
window.latencies = [];
window.opened = 0;
const es = new EventSource("/channels/gz/events");
es.onopen = () => { window.opened += 1; };
es.onmessage = (e) => window.latencies.push(Date.now() - JSON.parse(e.data).sent_ms);
</script>"""


def test_suspense_over_gzip_paints_shell_first_and_sections_in_completion_order(page: Any, live_server: Any) -> None:
    """Gzipped with a flush per boundary, the page still paints its shell before any boundary
    resolves and shows the sections in the order they complete."""
    st = live_server(create_app)
    page.add_init_script(RECORD_SECTIONS)
    response = page.goto(st.url + "/suspense?delays=2400,1200,1800", wait_until="commit")
    assert response.headers.get("content-encoding") == "gzip"
    page.wait_for_selector("h1")
    assert page.evaluate("document.querySelectorAll('[aria-busy=true]').length") == 3
    assert page.evaluate("window.__sections") == []
    page.wait_for_function("() => window.__sections.length === 3", timeout=20_000)
    assert page.evaluate("window.__sections") == ["section-1", "section-2", "section-0"]
    assert page.errors == []


def test_eventsource_over_gzip_gets_each_event_within_milliseconds(page: Any, live_server: Any) -> None:
    """With --compress-sse each event is flushed through the compressor as it is published: the
    browser has it within milliseconds, not when the next one pushes it out."""
    st = live_server(create_app, compress_sse=True)

    async def es_page(request: Any) -> HTMLResponse:
        return HTMLResponse(ES_PAGE)

    st.app.add_route("/es", es_page)
    seen: dict[str, str] = {}
    page.on("response", lambda r: seen.setdefault(r.url, r.headers.get("content-encoding", "")))
    page.goto(st.url + "/es")
    page.wait_for_function("window.opened === 1")
    engine = st.app.state["engine"]
    for n in range(1, 6):
        st.run(lambda: engine.publish_nowait("gz", json.dumps({"sent_ms": time.time() * 1000})))
        page.wait_for_function(f"window.latencies.length === {n}", timeout=5_000)  # this one, before the next
    latencies = page.evaluate("window.latencies")
    assert seen[st.url + "/channels/gz/events"] == "gzip"
    assert max(latencies) < 100, latencies  # a few ms on an idle machine


def test_status_page_draws_and_its_numbers_move_under_load(page: Any, live_server: Any) -> None:
    """/status charts the server's figures: while events are published and requests served, the
    events/s and requests/s cards show non-zero values and their lines have points."""
    st = live_server(create_app)
    page.goto(st.url + "/status")
    page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1")
    engine = st.app.state["engine"]
    deadline = time.monotonic() + 15
    moved = False
    while time.monotonic() < deadline and not moved:  # bounded: load until the page shows it
        for _ in range(50):
            st.run(lambda: engine.publish_nowait("load", "x"))
        page.evaluate("Promise.all([...Array(20)].map(() => fetch('/healthz')))")
        moved = page.evaluate(
            """() => ['events_per_s', 'requests_per_s'].every((k) => {
                 const v = document.querySelector(`[data-metric=${k}] .value`).textContent;
                 return v !== '-' && Number(v.replace(/,/g, '')) > 0; })"""
        )
    assert moved, page.inner_text("#grid")
    points = page.evaluate("document.querySelector('[data-metric=events_per_s] polyline').getAttribute('points')")
    assert points and len(points.split()) >= 2
    assert page.evaluate("document.getElementById('state').textContent") == "live"
    assert page.errors == []
