"""The demo's live notification page in Chromium."""

from __future__ import annotations

from typing import Any

from sse_server.demo import create_app


def test_live_page_publishes_and_shows_messages_as_text(page: Any, live_server: Any) -> None:
    """Submitting the publish box shows the message, timestamped, in every open feed, as text, not markup;
    an empty feed shows a hint instead."""
    st = live_server(create_app)
    other = page.context.new_page()
    for p in (page, other):
        p.goto(st.url + "/live?channel=room")
        p.wait_for_function("document.getElementById('status').textContent === 'live'")
        assert p.is_visible("#empty")  # the empty feed says how to get an event
    message = "<img src=x onerror=alert(1)> hello é"
    page.fill("#message", message)
    page.click("button")
    for p in (page, other):
        p.wait_for_function("document.querySelectorAll('#feed li').length === 1")
        # the channel tag, when it arrived, then the text
        assert p.text_content("#feed li .tag") == "room"
        assert p.evaluate("document.querySelector('#feed li').lastChild.data") == message
        assert p.get_attribute("#feed li time", "datetime")
        assert not p.is_visible("#empty")
        assert p.locator("#feed li img").count() == 0
        assert p.get_attribute("#feed li", "data-kind") == "note"
    st.run(lambda: st.app.state["engine"].publish_nowait("room", "from the server"))
    page.wait_for_function("document.querySelectorAll('#feed li').length === 2")
    assert page.evaluate("document.querySelector('#feed li').lastChild.data") == "from the server"
    assert page.errors == []


def test_live_page_follows_two_channels_on_one_eventsource(page: Any, live_server: Any) -> None:
    """The default page follows news and alerts over one connection and tags each event by channel."""
    st = live_server(create_app)
    page.goto(st.url + "/live")
    page.wait_for_function("document.getElementById('status').textContent === 'live'")
    engine = st.app.state["engine"]
    st.run(lambda: engine.publish_nowait("news", "n1"))
    st.run(lambda: engine.publish_nowait("alerts", "a1", event="note"))
    page.select_option("#target", "alerts")
    page.fill("#message", "a2")
    page.click("button")
    page.wait_for_function("document.querySelectorAll('#feed li').length === 3")
    rows = page.eval_on_selector_all(
        "#feed li", "els => els.map(li => [li.dataset.channel, li.dataset.kind, li.lastChild.textContent])"
    )
    assert rows == [["alerts", "note", "a2"], ["alerts", "note", "a1"], ["news", "message", "n1"]]
    assert st.run(lambda: len(st.server.streams)) == 1  # one connection for both channels
    assert page.errors == []
