"""The chat page (``GET /chat``) and the model routes it talks to (sse_server.ai).

The page starts a resumable generation (``POST /chat/streams`` with
``Prefer: respond-async``), then follows it with an EventSource on
``/chat/streams/{id}``. When the connection drops, EventSource reconnects with
``Last-Event-ID`` and the server replays only what was missed, so every token
appears once. The stop button cancels the generation on the server. Model output
is only ever assigned as text (``textContent``, text nodes): markup in an answer is
shown, never interpreted. Code fences (```lang ... ```) become ``<pre><code>`` and
`inline code` becomes ``<code>``, built with DOM calls from the answer's text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ai import install_llm
from ..app import App, HTMLResponse, Request
from .pages import PAGE_HEADERS

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["CHAT_PAGE", "install_chat"]

CHAT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AI chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>
body { font: 16px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; padding: 0 1rem; color: #1d1d1f; }
#log { list-style: none; padding: 0; }
.msg { margin: .75rem 0; padding: .6rem .8rem; border-radius: 8px; white-space: pre-wrap; overflow-wrap: anywhere; }
.msg.user { background: #e8f0fe; margin-left: 3rem; }
.msg.assistant { background: #f1f3f4; margin-right: 3rem; }
.msg code { font: .9em ui-monospace, monospace; background: #e3e5e8; padding: 0 .2em; border-radius: 3px; }
.msg pre { margin: .4rem 0; padding: .5rem; background: #e3e5e8; border-radius: 6px; overflow-x: auto;
           white-space: pre; }
.msg pre code { background: none; padding: 0; }
@media (max-width: 30rem) { .msg.user { margin-left: 1rem; } .msg.assistant { margin-right: 1rem; } }
.msg.assistant[data-state="streaming"]::after { content: "\\258d"; opacity: .5; }
.msg .note { display: block; font-size: .85em; color: #666; margin-top: .4rem; }
.msg.error { background: #fce8e6; }
form { display: flex; gap: .5rem; align-items: flex-end; }
textarea { flex: 1; font: inherit; padding: .4rem; min-height: 2.6rem; resize: vertical; }
button { font: inherit; padding: .4rem .9rem; }
#status { color: #666; font-size: .9em; min-height: 1.5em; }
</style></head>
<body>
<nav><a href="/">← Demo index</a></nav>
<h1>AI chat</h1>
<p id="status" role="status">idle</p>
<ol id="log" aria-live="polite"></ol>
<form id="ask">
  <textarea id="prompt" name="prompt" required
            placeholder="Ask something (Enter sends, Shift+Enter for a new line)"></textarea>
  <select id="model" name="model" hidden></select>
  <button id="send" type="submit">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
</form>
<script>
(() => {
  "use strict";
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const form = document.getElementById("ask");
  const prompt = document.getElementById("prompt");
  const modelSelect = document.getElementById("model");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const history = [];
  let current = null;  // {id, source, text, bubble}

  const setStatus = (text) => { status.textContent = text; };

  fetch("/v1/models").then((r) => r.ok ? r.json() : null).then((list) => {
    const models = (list && Array.isArray(list.data)) ? list.data : [];
    for (const m of models) {
      const option = document.createElement("option");
      option.value = option.textContent = String(m.id);
      modelSelect.append(option);
    }
    modelSelect.hidden = models.length < 2;
  }).catch(() => {});

  // The answer's text as DOM: ```lang fences -> <pre><code data-lang>, `x` -> <code>,
  // everything else text nodes. Only textContent and text nodes: no markup is parsed.
  // Runs on every token, so a fence that is still open shows as code already.
  const renderText = (target, src) => {
    const out = document.createDocumentFragment();
    src.split("```").forEach((part, i) => {
      if (i % 2) {
        const nl = part.indexOf("\\n");
        const pre = document.createElement("pre"), code = document.createElement("code");
        const lang = nl < 0 ? "" : part.slice(0, nl).trim();
        if (lang) code.dataset.lang = lang;
        code.textContent = nl < 0 ? "" : part.slice(nl + 1).replace(/\\n$/, "");
        pre.append(code);
        out.append(pre);
        return;
      }
      part.split(/(`[^`\\n]+`)/).forEach((seg, j) => {
        if (j % 2) {
          const code = document.createElement("code");
          code.textContent = seg.slice(1, -1);
          out.append(code);
        } else if (seg) {
          out.append(document.createTextNode(seg));
        }
      });
    });
    target.replaceChildren(out);
  };

  const bubble = (role, text) => {
    const li = document.createElement("li");
    li.className = "msg " + role;
    li.append(document.createTextNode(text));  // text, never markup
    log.append(li);
    li.scrollIntoView({block: "end"});
    return li;
  };

  const note = (li, text) => {
    const span = document.createElement("span");
    span.className = "note";
    span.textContent = text;
    li.append(span);
  };

  const finish = (state, message) => {
    if (!current) return;
    const c = current;
    current = null;
    c.source.close();
    c.bubble.dataset.state = state;
    if (message) note(c.bubble, message);
    if (c.bubble.rawText) history.push({role: "assistant", content: c.bubble.rawText});
    send.disabled = false;
    stop.disabled = true;
    document.body.dataset.streamState = state;
    setStatus(state);
  };

  const follow = (id) => {
    const li = bubble("assistant", "");
    li.dataset.state = "streaming";
    li.dataset.streamId = id;
    const body = document.createElement("div");
    li.replaceChildren(body);
    li.rawText = "";  // the answer as received; body shows it rendered
    const source = new EventSource("/chat/streams/" + encodeURIComponent(id));
    current = {id, source, bubble: li, tokens: 0};
    document.body.dataset.streamId = id;
    document.body.dataset.streamState = "streaming";
    source.onopen = () => {
      li.dataset.opens = String(Number(li.dataset.opens || 0) + 1);  // 2+: it resumed
      setStatus("streaming");
    };
    source.addEventListener("token", (e) => {
      const piece = JSON.parse(e.data).content;
      li.rawText += piece;
      renderText(body, li.rawText);  // "<b>" stays the characters < b >
      current.tokens += 1;
      li.dataset.tokens = String(current.tokens);
    });
    source.addEventListener("done", (e) => {
      const reason = JSON.parse(e.data).finish_reason;
      finish(reason === "cancelled" ? "stopped" : "done",
             reason === "stop" ? "" : "(" + (reason === "cancelled" ? "stopped" : reason) + ")");
    });
    source.addEventListener("reset", () => {
      // The server could not resume from our last event and replays from the start.
      li.rawText = "";
      renderText(body, "");
      current.tokens = 0;
    });
    // "error" is both our server's named event (a MessageEvent with data) and
    // EventSource's own connection error (a plain Event).
    source.addEventListener("error", (e) => {
      if (!current || current.source !== source) return;
      if (typeof e.data === "string") {
        let message = "the model failed";
        try { message = JSON.parse(e.data).message || message; } catch (_) {}
        li.classList.add("error");
        finish("error", "Error: " + message);
      } else if (source.readyState === EventSource.CONNECTING) {
        setStatus("reconnecting");  // the browser retries with Last-Event-ID
        document.body.dataset.streamState = "reconnecting";
      } else {
        li.classList.add("error");
        finish("error", "Connection lost.");
      }
    });
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const content = prompt.value.trim();
    if (!content || current) return;
    prompt.value = "";
    bubble("user", content);
    history.push({role: "user", content});
    send.disabled = true;
    setStatus("starting");
    const body = {messages: history.slice()};
    if (modelSelect.value) body.model = modelSelect.value;
    try {
      const r = await fetch("/chat/streams", {
        method: "POST",
        headers: {"Content-Type": "application/json", "Prefer": "respond-async"},
        body: JSON.stringify(body),
      });
      const answer = await r.json();
      if (!r.ok) throw new Error((answer.error && answer.error.message) || ("HTTP " + r.status));
      follow(answer.id);
      stop.disabled = false;
    } catch (err) {
      const li = bubble("assistant", "");
      li.classList.add("error");
      note(li, "Error: " + err.message);
      send.disabled = false;
      setStatus("error");
    }
  });

  stop.addEventListener("click", async () => {
    if (!current) return;
    stop.disabled = true;
    setStatus("stopping");
    // The server cancels the generation and sends "done" (finish_reason "cancelled").
    await fetch("/chat/streams/" + encodeURIComponent(current.id) + "/cancel", {method: "POST"});
  });

  prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
})();
</script>
</body></html>
"""


def install_chat(app: App, config: Config) -> None:
    """The model API (sse_server.ai, with its default job limits) plus ``GET /chat``."""
    install_llm(app, config)

    async def chat_page(request: Request) -> HTMLResponse:
        return HTMLResponse(CHAT_PAGE, headers=PAGE_HEADERS)

    app.add_route("/chat", chat_page)
