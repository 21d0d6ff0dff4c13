"""EventSource in Chromium against the demo's channels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sse_server.channels import EngineUnavailableError
from sse_server.demo import create_app

from ..redis_server import RedisServer, require_redis
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


MULTI_PAGE = """<!doctype html><meta charset="utf-8"><title>multi</title>
<script>
window.received = [];
window.opened = 0;
const es = new EventSource("/events?channel=a&channel=b");
es.onopen = () => { window.opened += 1; };
es.onmessage = (e) => window.received.push({data: e.data, id: e.lastEventId,
                                            channel: e.lastEventId.slice(e.lastEventId.indexOf(";") + 1)});
es.addEventListener("reset", (e) => window.received.push({reset: e.data}));
</script>"""


def test_two_channels_on_one_eventsource_resume_together_after_a_cut(page: Any, live_server: Any) -> None:
    """One EventSource carries two channels tagged by channel; after a server-side cut the
    browser's own reconnect resumes both, nothing lost or repeated."""
    st = live_server(create_app, retry_ms=100)

    async def multi(request: Any) -> Any:
        from sse_server import HTMLResponse

        return HTMLResponse(MULTI_PAGE)

    st.app.add_route("/multi", multi)
    engine = st.app.state["engine"]
    page.goto(st.url + "/multi")
    page.wait_for_function("window.opened === 1")
    before = [st.run(lambda ch=ch, i=i: engine.publish_nowait(ch, f"{ch}{i}")) for i, ch in enumerate("abab")]
    page.wait_for_function("window.received.length === 4")

    def cut() -> int:
        streams = list(st.server.streams)
        for exchange in streams:
            exchange.abort()  # the network drops under the page
        return len(streams)

    assert st.run(cut) == 1
    during = [st.run(lambda ch=ch, i=i: engine.publish_nowait(ch, f"{ch}-gap{i}")) for i, ch in enumerate("baab")]
    page.wait_for_function("window.opened === 2")
    after = [st.run(lambda ch=ch: engine.publish_nowait(ch, f"{ch}-after")) for ch in "ab"]
    page.wait_for_function("window.received.length === 10")
    got = received(page)
    expected = [(p.id, ch) for p, ch in zip(before + during + after, "abab" + "baab" + "ab", strict=True)]
    assert [(g["id"].partition(";")[0], g["channel"]) for g in got] == expected
    assert [g["data"] for g in got][4:8] == ["b-gap0", "a-gap1", "a-gap2", "b-gap3"]
    assert all("ERR_INCOMPLETE_CHUNKED_ENCODING" in e for e in page.errors)  # only the cut itself


def test_eventsource_opened_while_redis_is_stalled_keeps_trying(page: Any, live_server: Any, tmp_path: Path) -> None:
    """An EventSource opened while Redis is stalled is told to retry (200 with a retry hint),
    never refused: it does not close, reconnects, and gets what is published once Redis is back."""
    require_redis()
    redis = RedisServer(tmp_path)
    st = live_server(create_app, backplane=redis.url, backplane_timeout_s=0.25)
    serve_page(st)
    st.call(redis.start())
    try:
        redis.pause()
        page.goto(st.url + "/es")
        page.wait_for_function("window.opened >= 2", timeout=10_000)  # told to retry, and it did
        assert page.evaluate("es.readyState") != 2  # never CLOSED, as a 503 would have made it
        redis.resume()
        engine = st.app.state["engine"]
        deadline = time.monotonic() + 15
        published: list[str] = []
        while not received(page):  # publish until the reconnected page is subscribed again
            assert time.monotonic() < deadline, "the page got nothing after Redis came back"
            try:
                published.append(st.call(engine.publish("b", "after")).id)
            except EngineUnavailableError:
                continue
            page.wait_for_timeout(100)  # paces the publisher while the page reconnects
        got = received(page)
        assert {(e["kind"], e["data"]) for e in got} == {("message", "after")}
        assert {e["id"] for e in got} <= set(published)
        assert page.errors == []
    finally:
        redis.stop()
