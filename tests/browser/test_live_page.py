"""The demo's live notification page in Chromium."""

from __future__ import annotations

from typing import Any

from sse_server.demo import create_app


def test_live_page_publishes_and_shows_messages_as_text(page: Any, live_server: Any) -> None:
    """Submitting the publish box shows the message in every open feed, as text, not markup."""
    st = live_server(create_app)
    other = page.context.new_page()
    for p in (page, other):
        p.goto(st.url + "/live?channel=room")
        p.wait_for_function("document.getElementById('status').textContent === 'live'")
    message = "<img src=x onerror=alert(1)> hello é"
    page.fill("#message", message)
    page.click("button")
    for p in (page, other):
        p.wait_for_function("document.querySelectorAll('#feed li').length === 1")
        assert p.text_content("#feed li") == message
        assert p.locator("#feed li img").count() == 0
        assert p.get_attribute("#feed li", "data-kind") == "note"
    st.run(lambda: st.app.state["engine"].publish_nowait("room", "from the server"))
    page.wait_for_function("document.querySelectorAll('#feed li').length === 2")
    assert page.text_content("#feed li") == "from the server"
    assert page.errors == []
