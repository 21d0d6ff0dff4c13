"""EventSource in Chromium against the demo's channels."""

from __future__ import annotations

from typing import Any

from sse_server.demo import create_app

from .conftest import ServerThread

PAGE = """<!doctype html><meta charset="utf-8"><title>es</title><ul id="log"></ul>
<script>
window.received = [];
window.opened = 0;
const es = new EventSource("/channels/b/events");
es.onopen = () => { window.opened += 1; };
const keep = (kind) => (e) => window.received.push({kind, data: e.data, id: e.lastEventId});
es.onmessage = keep("message");
es.addEventListener("note", keep("note"));
es.addEventListener("reset", keep("reset"));
</script>"""


def serve_page(st: ServerThread) -> None:
    from sse_server import HTMLResponse

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse(PAGE)

    st.app.add_route("/es", page)


def received(page: Any) -> list[dict]:
    return page.evaluate("window.received")


def test_eventsource_gets_newlines_unicode_names_and_ids(page: Any, live_server: Any) -> None:
    """EventSource receives multi-line unicode data, named events and ids exactly."""
    st = live_server(create_app, heartbeat_s=1)
    serve_page(st)
    page.goto(st.url + "/es")
    page.wait_for_function("window.opened === 1")
    broker = st.app.state["engine"]
    text = "first line\nsecond\r\nthird \u2028 é 漢字 🎉"
    a = st.run(lambda: broker.publish_nowait("b", text))
    b = st.run(lambda: broker.publish_nowait("b", "<b>not markup</b>", event="note"))
    page.wait_for_function("window.received.length === 2")
    assert received(page) == [
        {"kind": "message", "data": "first line\nsecond\nthird \u2028 é 漢字 🎉", "id": a.id},
        {"kind": "note", "data": "<b>not markup</b>", "id": b.id},
    ]
    assert page.errors == []


def test_eventsource_reconnects_after_server_restart(page: Any, live_server: Any) -> None:
    """After the server restarts on the same port, EventSource reconnects, is told of the reset, and gets new events."""
    st = live_server(create_app, retry_ms=200, shutdown_retry_jitter_ms=200)
    serve_page(st)
    port = st.server.port
    page.goto(st.url + "/es")
    page.wait_for_function("window.opened === 1")
    first = st.run(lambda: st.app.state["engine"].publish_nowait("b", "before"))
    page.wait_for_function("window.received.length === 1")
    st.stop()

    st2 = live_server(create_app, port=port, retry_ms=200)
    serve_page(st2)
    page.wait_for_function("window.opened === 2", timeout=15_000)
    after = st2.run(lambda: st2.app.state["engine"].publish_nowait("b", "after"))
    page.wait_for_function("window.received.some(e => e.data === 'after')")
    got = received(page)
    assert got[0] == {"kind": "message", "data": "before", "id": first.id}
    kinds = [e["kind"] for e in got[1:]]
    assert kinds == ["reset", "message"]  # the old id is unknown to the new run: said, not hidden
    assert got[-1]["id"] == after.id
    # Chromium logs a failed reconnect attempt while the server is down; nothing else.
    assert [e for e in page.errors if "ERR_CONNECTION_REFUSED" not in e] == []
