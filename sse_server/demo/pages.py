"""Static pages of the demo. They escape everything they show with textContent."""

from __future__ import annotations

__all__ = ["INDEX", "LIVE"]

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; padding: 0 1rem; color: #1d1d1f; }
a { color: #0b57d0; } code { background: #f1f3f4; padding: 0 .25em; border-radius: 3px; }
li { margin: .25rem 0; } .muted { color: #666; font-size: .9em; }
"""

INDEX = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sse_server demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<h1>sse_server demo</h1>
<p>A standard-library HTTP/1.1 server for Server-Sent Events and streamed HTML.</p>
<ul>
<li><a href="/live">Live notifications</a>: a channel feed over EventSource with a publish box.</li>
<li><a href="/chat">AI chat</a>: answers streamed token by token from the built-in mock model.</li>
<li><a href="/suspense?delays=300,100,200">Streamed page</a>: sections arrive out of order as they finish.</li>
<li><a href="/dashboard">Dashboard</a>: panels stream in at different times, one fails on purpose.</li>
<li><a href="/firehose?n=20&amp;size=16">Firehose</a>: an event stream as fast as you read it.</li>
<li><a href="/v1/models">/v1/models</a>, <code>POST /v1/chat/completions</code>: an OpenAI-compatible API.</li>
<li><a href="/healthz">/healthz</a></li>
</ul>
<p class="muted">Publish from a shell:
<code>curl -X POST --data 'hello' 'http://HOST/channels/news/events?event=note'</code></p>
</body></html>
"""

LIVE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Live notifications</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE} #feed li {{ border-left: 3px solid #0b57d0; padding-left: .5rem; white-space: pre-wrap; }}
#status {{ font-weight: 600; }}</style></head>
<body>
<h1>Live notifications</h1>
<p>Channel <code id="channel">news</code>: <span id="status">connecting</span></p>
<form id="publish">
  <input id="message" name="message" autocomplete="off" placeholder="Say something" size="40" required>
  <button>Publish</button>
</form>
<ol id="feed"></ol>
<script>
(() => {{
  const channel = new URLSearchParams(location.search).get("channel") || "news";
  document.getElementById("channel").textContent = channel;
  const url = "/channels/" + encodeURIComponent(channel) + "/events";
  const status = document.getElementById("status");
  const feed = document.getElementById("feed");
  const show = (kind, e) => {{
    const li = document.createElement("li");
    li.dataset.id = e.lastEventId;
    li.dataset.kind = kind;
    li.textContent = e.data;  // text, never markup
    feed.prepend(li);
  }};
  const source = new EventSource(url);
  source.onopen = () => {{ status.textContent = "live"; }};
  source.onerror = () => {{ status.textContent = "reconnecting"; }};
  source.onmessage = (e) => show("message", e);
  source.addEventListener("note", (e) => show("note", e));
  source.addEventListener("reset", () => {{ status.textContent = "live (some events were missed)"; }});
  document.getElementById("publish").addEventListener("submit", async (ev) => {{
    ev.preventDefault();
    const input = document.getElementById("message");
    await fetch(url + "?event=note", {{ method: "POST", body: input.value }});
    input.value = "";
  }});
}})();
</script>
</body></html>
"""
