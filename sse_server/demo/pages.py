"""Static pages of the demo. They escape everything they show with textContent."""

from __future__ import annotations

__all__ = ["INDEX", "LIVE", "PAGE_HEADERS"]

# Sent with every demo page (not with API answers, which stay lean): no MIME sniffing
# of what we label, and no page URL (it may name a private channel or carry a token
# in its query) in the Referer of requests to other origins.
PAGE_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"))

_ICON = '<link rel="icon" href="/favicon.svg" type="image/svg+xml">'
_NAV = '<nav><a href="/">← Demo index</a></nav>'

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; padding: 0 1rem; color: #1d1d1f; }
a { color: #0b57d0; } code { background: #f1f3f4; padding: 0 .25em; border-radius: 3px; overflow-wrap: anywhere; }
nav { margin-bottom: .5rem; }
li { margin: .25rem 0; } .muted { color: #666; font-size: .9em; }
"""

INDEX = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sse_server demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{_ICON}
<style>{_STYLE}</style></head>
<body>
<h1>sse_server demo</h1>
<p>A standard-library HTTP/1.1 server for Server-Sent Events and streamed HTML.</p>
<ul>
<li><a href="/live">Live notifications</a>: a channel feed over EventSource with a publish box.</li>
<li><a href="/chat">AI chat</a>: answers streamed token by token from the built-in mock model.</li>
<li><a href="/suspense?delays=300,100,200">Streamed page</a>: sections arrive out of order as they finish.</li>
<li><a href="/dashboard">Dashboard</a>: panels stream in at different times; two panels fail on purpose.</li>
<li><a href="/firehose?n=20&amp;size=16">Firehose</a>: an event stream as fast as you read it.</li>
<li><a href="/v1/models">/v1/models</a>, <code>POST /v1/chat/completions</code>: an OpenAI-compatible API.</li>
<li><a href="/status">Server status</a>: this server's own figures, charted live over SSE
(also <a href="/metrics">/metrics</a> for Prometheus).</li>
<li><a href="/healthz">/healthz</a></li>
</ul>
<p class="muted">Publish from a shell:
<code>curl -X POST --data 'hello' 'http://HOST/channels/news/events?event=note'</code></p>
</body></html>
"""

LIVE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Live notifications</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{_ICON}
<style>{_STYLE} #feed li {{ border-left: 3px solid #0b57d0; padding-left: .5rem; white-space: pre-wrap; }}
#feed li[data-channel="alerts"] {{ border-left-color: #b3261e; }}
.tag, #feed time {{ font-size: .8em; color: #666; margin-right: .5em; }}
#publish {{ display: flex; flex-wrap: wrap; gap: .5rem; }}
#message {{ flex: 1 1 12rem; min-width: 0; }}
#feed:not(:empty) + #empty {{ display: none; }}
#status {{ font-weight: 600; }}</style></head>
<body>
{_NAV}
<h1>Live notifications</h1>
<p>Channels <code id="channels">news, alerts</code> on one EventSource: <span id="status">connecting</span></p>
<form id="publish">
  <select id="target" aria-label="Channel"></select>
  <input id="message" name="message" autocomplete="off" placeholder="Say something" required>
  <button>Publish</button>
</form>
<ol id="feed"></ol>
<p id="empty" class="muted">No events yet. Publish one above, or from a shell with
<code>curl -X POST --data 'hello' 'http://HOST/channels/news/events?event=note'</code>.</p>
<script>
(() => {{
  // ?channel=a&channel=b picks the channels; each event's id ends with ";<channel>".
  const params = new URLSearchParams(location.search).getAll("channel");
  const channels = params.length ? params : ["news", "alerts"];
  document.getElementById("channels").textContent = channels.join(", ");
  const target = document.getElementById("target");
  for (const name of channels) target.add(new Option(name, name));
  const status = document.getElementById("status");
  const feed = document.getElementById("feed");
  const channelOf = (id) => id.slice(id.indexOf(";") + 1);
  const show = (kind, e) => {{
    const li = document.createElement("li");
    li.dataset.id = e.lastEventId;
    li.dataset.kind = kind;
    li.dataset.channel = channelOf(e.lastEventId);
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = li.dataset.channel;
    const at = new Date();
    const time = document.createElement("time");
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString();  // when this page received it
    li.append(tag, time, document.createTextNode(e.data));  // text, never markup
    feed.prepend(li);
  }};
  const query = channels.map((c) => "channel=" + encodeURIComponent(c)).join("&");
  const source = new EventSource("/events?" + query);
  source.onopen = () => {{ status.textContent = "live"; }};
  source.onerror = () => {{ status.textContent = "reconnecting"; }};
  source.onmessage = (e) => show("message", e);
  source.addEventListener("note", (e) => show("note", e));
  source.addEventListener("reset", () => {{ status.textContent = "live (some events were missed)"; }});
  document.getElementById("publish").addEventListener("submit", async (ev) => {{
    ev.preventDefault();
    const input = document.getElementById("message");
    const url = "/channels/" + encodeURIComponent(target.value) + "/events?event=note";
    await fetch(url, {{ method: "POST", body: input.value }});
    input.value = "";
  }});
}})();
</script>
</body></html>
"""
