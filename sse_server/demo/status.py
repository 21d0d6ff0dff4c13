"""``GET /status``: the server's own figures, charted live over SSE.

``GET /status/events`` sends one ``event: figures`` a second (JSON): gauges as they
are, counters as rates over the last second, and the p99 of request durations in
that second, interpolated from the histogram's buckets as Prometheus would. The
figures come from the server's ``Metrics`` (``app.state["metrics"]``); the page
draws them as inline SVG sparklines, with nothing loaded from elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..app import HTMLResponse, HTTPError, Request
from ..metrics import DURATION_BUCKETS_S, quantile
from ..middleware.metrics import Metrics
from ..sse import Event
from ..sse.streams import EventStream

__all__ = ["STATUS_PAGE", "status_events", "status_page"]

_INTERVAL_S = 1.0


def _metrics(request: Request) -> Metrics:
    assert request.app is not None
    metrics = request.app.state.get("metrics")
    if not isinstance(metrics, Metrics):
        raise HTTPError(503, "metrics are off on this server (--no-metrics)")
    return metrics


def figures_between(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the page shows: ``after``'s gauges, and rates and p99 since ``before``."""
    def rate(key: str) -> float:
        return max(0.0, (after[key] - before[key]) / seconds) if seconds > 0 else 0.0

    delta = [a - b for a, b in zip(after["duration_buckets"], before["duration_buckets"], strict=True)]
    p99 = quantile(DURATION_BUCKETS_S, delta, 0.99)
    return {
        "connections": after["connections"],
        "subscribers": after["subscribers"],
        "channels": after["channels"],
        "streams": after["streams"],
        "events_per_s": round(rate("published"), 1),
        "deliveries_per_s": round(rate("delivered"), 1),
        "bytes_per_s": round(rate("bytes")),
        "requests_per_s": round(rate("requests"), 1),
        "slow_drops": after["slow_drops"],
        "slow_drops_per_s": round(rate("slow_drops"), 2),
        "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
    }


async def _figures(metrics: Metrics) -> AsyncIterator[Event]:
    before, t0 = metrics.figures(), time.monotonic()
    yield Event(json.dumps(figures_between(before, before, 0)), event="figures")  # draws at once
    while True:
        await asyncio.sleep(_INTERVAL_S)
        after, t1 = metrics.figures(), time.monotonic()
        yield Event(json.dumps(figures_between(before, after, t1 - t0)), event="figures")
        before, t0 = after, t1


async def status_events(request: Request) -> EventStream:
    metrics = _metrics(request)
    return EventStream(_figures(metrics), retry_ms=2000)


async def status_page(request: Request) -> HTMLResponse:
    return HTMLResponse(STATUS_PAGE)


STATUS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Server status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: .75rem; color: #1d1d1f; }
h1 { font-size: 1.3rem; margin: .25rem 0 .5rem; } .muted { color: #666; font-size: .85em; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr)); gap: .6rem; }
.card { border: 1px solid #d5d9e2; border-radius: 8px; padding: .5rem .7rem; }
.card h2 { font-size: .8rem; font-weight: 600; color: #555; margin: 0;
  text-transform: uppercase; letter-spacing: .03em; }
.value { font-size: 1.7rem; font-weight: 650; font-variant-numeric: tabular-nums; }
svg { width: 100%; height: 48px; display: block; }
polyline { fill: none; stroke: #0b57d0; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.area { fill: #0b57d022; stroke: none; }
#state { font-weight: 600; display: inline-block; min-width: 7.5em; }  /* its words change: the line must not reflow */
</style></head>
<body>
<nav><a href="/">← Demo index</a></nav>
<h1>Server status</h1>
<p class="muted">Live figures of this server, every second over SSE: <span id="state">connecting</span>.
Also as <a href="/metrics">/metrics</a> (Prometheus).</p>
<div id="grid"></div>
<script>
(() => {
  const CHARTS = [
    ["connections", "Connections", (v) => v.toLocaleString()],
    ["subscribers", "Subscribers", (v) => v.toLocaleString()],
    ["events_per_s", "Events / s", (v) => v.toLocaleString()],
    ["deliveries_per_s", "Deliveries / s", (v) => v.toLocaleString()],
    ["bytes_per_s", "Bytes / s", human],
    ["requests_per_s", "Requests / s", (v) => v.toLocaleString()],
    ["slow_drops", "Slow-client drops", (v) => v.toLocaleString()],
    ["p99_ms", "p99 request ms", (v) => v === null ? "-" : v.toFixed(2)],
  ];
  const POINTS = 60;
  const SVG = "http://www.w3.org/2000/svg";
  const grid = document.getElementById("grid");
  const series = {};
  function human(n) {
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return n.toFixed(n < 10 && i ? 1 : 0) + " " + units[i];
  }
  for (const [key, title] of CHARTS) {
    const card = document.createElement("section");
    card.className = "card";
    card.dataset.metric = key;
    const h = document.createElement("h2");
    h.textContent = title;
    const value = document.createElement("div");
    value.className = "value";
    value.textContent = "-";
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + (POINTS - 1) + " 100");
    svg.setAttribute("preserveAspectRatio", "none");
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("class", "area");
    const line = document.createElementNS(SVG, "polyline");
    svg.append(area, line);
    card.append(h, value, svg);
    grid.append(card);
    series[key] = { values: [], value, line, area };
  }
  function draw(key, v) {
    const s = series[key];
    s.values.push(v === null ? 0 : v);
    if (s.values.length > POINTS) s.values.shift();
    const top = Math.max(1, ...s.values);
    const offset = POINTS - s.values.length;
    const pts = s.values.map((y, i) => (offset + i) + "," + (100 - 96 * y / top).toFixed(1));
    s.line.setAttribute("points", pts.join(" "));
    s.area.setAttribute("points", offset + ",100 " + pts.join(" ") + " " + (POINTS - 1) + ",100");
  }
  const state = document.getElementById("state");
  const source = new EventSource("/status/events");
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting"; };
  source.addEventListener("figures", (e) => {
    const f = JSON.parse(e.data);
    for (const [key, , format] of CHARTS) {
      series[key].value.textContent = format(f[key]);
      draw(key, f[key]);
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  });
})();
</script>
</body></html>
"""
