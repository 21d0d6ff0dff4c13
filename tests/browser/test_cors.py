"""A page on another origin (a second listener) using the server through CORS, allowed and refused."""

from __future__ import annotations

import json
from typing import Any

from sse_server import App, HTMLResponse, Request, Response
from sse_server.auth import mint_token
from sse_server.demo import create_app

from .conftest import ServerThread

SECRET = "a-browser-test-secret-of-32-bytes-or-more"
ENV = "SSE_BROWSER_TEST_SECRET"

# The page opens an EventSource with credentials (the sse_token cookie it set), and
# a fetch POST whose streamed body it reads as it arrives, both to the API's origin.
PAGE = """<!doctype html><meta charset="utf-8"><title>cors</title>
<script>
const API = %(api)s;
window.events = []; window.esState = "connecting"; window.post = {state: "pending", text: "", chunks: 0};
document.cookie = "sse_token=" + %(token)s + "; path=/; SameSite=Lax";
const es = new EventSource(API + "/channels/news/events", {withCredentials: true});
es.onopen = () => { window.esState = "open"; };
es.onmessage = (e) => window.events.push(e.data);
es.onerror = () => { window.esState = es.readyState === EventSource.CLOSED ? "closed" : "retrying"; };
(async () => {
  try {
    const r = await fetch(API + "/chat/streams", {
      method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({messages: [{role: "user", content: "hello from another origin"}]}),
    });
    window.post.status = r.status;
    window.post.streamId = r.headers.get("Chat-Stream-Id");
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      window.post.chunks += 1;
      window.post.text += decoder.decode(value, {stream: true});
    }
    window.post.state = "done";
  } catch (err) {
    window.post.state = "failed";
    window.post.error = err.name;
  }
})();
</script>"""


class Site:
    """The second origin: a listener on another port that serves only the page,
    pointed at the API once that has started (each needs the other's address)."""

    def __init__(self, live_server: Any) -> None:
        self.api_url = ""
        app = App()

        async def page(request: Request) -> HTMLResponse:
            token = mint_token(SECRET, subscribe=["news"], exp_s=300, sub="page")
            return HTMLResponse(PAGE % {"api": json.dumps(self.api_url), "token": json.dumps(token)})

        async def favicon(request: Request) -> Response:
            return Response(b"", 204)

        app.add_route("/page", page)
        app.add_route("/favicon.ico", favicon)
        self.thread: ServerThread = live_server(app)
        self.url = self.thread.url


def api_server(live_server: Any, monkeypatch: Any, site: Site, origins: tuple[str, ...]) -> ServerThread:
    monkeypatch.setenv(ENV, SECRET)
    st: ServerThread = live_server(create_app, cors_origins=origins, jwt_secret_env=ENV,
                                   model_first_token_ms=1, model_tokens_per_s=5000)
    site.api_url = st.url
    return st


def test_an_allowed_origin_streams_with_credentials(page: Any, live_server: Any, monkeypatch: Any) -> None:
    """From a listed origin, EventSource withCredentials (cookie token) and a fetch POST stream both work."""
    site = Site(live_server)
    api = api_server(live_server, monkeypatch, site, (site.url,))
    page.goto(site.url + "/page")
    page.wait_for_function("window.esState === 'open'")
    engine = api.app.state["engine"]
    api.run(lambda: engine.publish_nowait("news", "across origins"))
    page.wait_for_function("window.events.length === 1")
    page.wait_for_function("window.post.state !== 'pending'")
    post = page.evaluate("window.post")
    assert page.evaluate("window.events") == ["across origins"]
    assert post["state"] == "done" and post["status"] == 200, post
    assert post["streamId"], "Chat-Stream-Id is exposed to the page"
    assert "event: token" in post["text"] and "event: done" in post["text"]
    assert page.errors == []


def test_a_refused_origin_sees_nothing(page: Any, live_server: Any, monkeypatch: Any) -> None:
    """From an unlisted origin the browser blocks both: EventSource closes for good and fetch rejects."""
    site = Site(live_server)
    api_server(live_server, monkeypatch, site, ("http://elsewhere.test",))
    page.goto(site.url + "/page")
    page.wait_for_function("window.esState === 'closed' && window.post.state !== 'pending'")
    post = page.evaluate("window.post")
    assert post["state"] == "failed" and post["error"] == "TypeError", post
    assert post.get("status") is None and post["text"] == ""
    assert page.evaluate("window.events") == []
    assert any("CORS" in e for e in page.errors), page.errors  # the browser says why, in the console
