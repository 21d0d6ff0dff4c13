"""The server's metrics: counts kept on paths that run anyway, read when scraped.

``Metrics`` is a middleware that answers ``GET /metrics`` (Prometheus text format
0.0.4, behind a bearer token with ``--metrics-token-env``) and passes every other
request on without a coroutine of its own. ``observe`` counts every request by
method and status when its response ends, with its duration in a histogram
(streams in their own, when they end): the server calls it as a finish hook
with the Outcome of each response, so no callback is registered per request.

Everything else is read at scrape time from where it already lives: connections
and live streams from the server's registries, events, deliveries, drops and
resumes from the channel engine's integers (``app.state["engine"]``), heartbeats
from the shared timer. So the fan-out path gains nothing per delivery.

One process is one scrape. Under ``--workers`` each worker sets ``gather``, which
adds its siblings' ``collect()`` to its own (``sse_server/workers.py``: labelled
``worker``), so a scrape on any worker reports every worker, never one picked by chance.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sized
from typing import TYPE_CHECKING, Any, Protocol

from ..app import AnyResponse, Handler, Outcome, Request, Response
from ..metrics import (
    CONTENT_TYPE,
    DURATION_BUCKETS_S,
    STREAM_BUCKETS_S,
    Family,
    Histogram,
    counter,
    encode,
    gauge,
    labelled,
    process_families,
)
from ..sse.streams import Heartbeats

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Iterable

    from ..app import App

__all__ = ["Metrics", "METRICS_PATH"]

METRICS_PATH = "/metrics"
# Methods are client-chosen: any other is counted as "other", so a client cannot
# grow the label set (and every scrape) without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STREAM_KINDS = ("channel", "iterator", "html")


class Source(Protocol):
    """What the metrics read of the server (server.Server is one)."""

    @property
    def app(self) -> App: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def connections(self) -> Sized: ...
    @property
    def streams(self) -> Iterable[Any]: ...  # Exchanges: .body_bytes, .response
    write_timeouts: int


class Metrics:
    """Counts for one server; ``collect()`` is one scrape as ``Family`` values."""

    def __init__(self, server: Source, token: str | None = None) -> None:
        self.server = server
        self._token = f"Bearer {token}".encode() if token else None
        self.requests: dict[tuple[str, int], int] = {}
        self.request_duration = Histogram(DURATION_BUCKETS_S)  # plain responses
        self.stream_duration = Histogram(STREAM_BUCKETS_S)
        self.finished_bytes = 0  # body bytes of responses that have ended
        self._bytes_reported = 0
        # Set by a worker of --workers: this worker's families in, every worker's out.
        self.gather: Callable[[list[Family]], Awaitable[list[Family]]] | None = None

    def __call__(self, request: Request, call_next: Handler) -> Awaitable[AnyResponse]:
        # A plain function handing on the next layer's coroutine: every request but a
        # scrape passes through without a coroutine of this layer's own.
        if request.path == METRICS_PATH and request.method in ("GET", "HEAD"):
            return self.scrape(request)
        return call_next(request)

    def observe(self, outcome: Outcome) -> None:
        """Count one ended response (the server's finish hook: it runs for every request)."""
        method = outcome.method if outcome.method in _METHODS else "other"
        key = (method, outcome.status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.finished_bytes += outcome.body_bytes
        if outcome.streamed:
            self.stream_duration.observe(outcome.duration_s)
        else:
            self.request_duration.observe(outcome.duration_s)

    async def scrape(self, request: Request) -> Response:
        token = self._token
        if token is not None:
            given = (request.headers.get("authorization") or "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, token):
                return Response("a bearer token is required\n", 401, [("WWW-Authenticate", 'Bearer realm="metrics"')])
        families = self.collect()
        if self.gather is not None:
            families = await self.gather(families)
        return Response(encode(families), content_type=CONTENT_TYPE, headers=[("Cache-Control", "no-store")])

    # -- reading -----------------------------------------------------------------------------

    def bytes_sent(self) -> int:
        """Bytes of every response body so far, live streams included; never goes down."""
        live = 0
        for exchange in self.server.streams:
            live += exchange.body_bytes
        # A stream that just ended moves from live to finished; max() keeps a scrape
        # taken in between from reading less than the one before.
        self._bytes_reported = max(self._bytes_reported, self.finished_bytes + live)
        return self._bytes_reported

    def stream_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(_STREAM_KINDS, 0)
        for exchange in self.server.streams:
            response = exchange.response
            kind = response.kind if response is not None else "iterator"
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def _engine(self) -> Any:
        return self.server.app.state.get("engine")

    def figures(self) -> dict[str, Any]:
        """The live figures the status page charts (counters as totals)."""
        engine = self._engine()
        return {
            "connections": len(self.server.connections),
            "streams": self.stream_counts(),
            "subscribers": engine.subscriber_total() if engine is not None else 0,
            "channels": engine.channel_count if engine is not None else 0,
            "published": engine.published if engine is not None else 0,
            "delivered": engine.delivered if engine is not None else 0,
            "bytes": self.bytes_sent(),
            "slow_drops": self.slow_disconnects(),
            "requests": sum(self.requests.values()),
            "duration_buckets": self.request_duration.snapshot(),
        }

    def slow_disconnects(self) -> int:
        engine = self._engine()
        return (engine.dropped if engine is not None else 0) + self.server.write_timeouts

    def collect(self) -> list[Family]:
        engine = self._engine()
        streams = self.stream_counts()
        heartbeats = Heartbeats.for_loop(self.server.loop).sent
        families = [
            gauge("sse_connections", "Open client connections.", len(self.server.connections)),
            labelled("sse_streams", "gauge", "Live streaming responses by kind.",
                     (((("kind", kind),), n) for kind, n in streams.items())),
            gauge("sse_subscribers", "Live channel subscriptions (a stream of n channels counts n).",
                  engine.subscriber_total() if engine is not None else 0),
            gauge("sse_channels", "Channels the engine holds.", engine.channel_count if engine is not None else 0),
            counter("sse_events_published_total", "Events published to channels.",
                    engine.published if engine is not None else 0),
            counter("sse_deliveries_total", "Live events written to subscribers (one per subscriber per event).",
                    engine.delivered if engine is not None else 0),
            counter("sse_bytes_sent_total", "Response body bytes sent, on the wire (after compression and framing).",
                    self.bytes_sent()),
            counter("sse_slow_client_disconnects_total",
                    "Clients dropped for falling behind: over their buffer budget or past the write timeout.",
                    self.slow_disconnects()),
            labelled("sse_resumes_total", "counter", "Subscriptions with a Last-Event-ID, by result.", (
                ((("result", "replayed"),), engine.resumes_replayed if engine is not None else 0),
                ((("result", "reset"),), engine.resumes_reset if engine is not None else 0),
            )),
            counter("sse_heartbeats_total", "Heartbeat comments written to idle streams.", heartbeats),
            labelled("http_requests_total", "counter", "Requests whose response has ended, by method and status.",
                     (((("method", m), ("status", str(s) if s else "none")), n)
                      for (m, s), n in sorted(self.requests.items()))),
            self.request_duration.family("http_request_duration_seconds",
                                         "Time from request head to last byte of non-stream responses."),
            self.stream_duration.family("sse_stream_duration_seconds",
                                        "Lifetime of streaming responses, when they end."),
        ]
        families.extend(process_families())
        return families
