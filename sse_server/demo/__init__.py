"""The app ``python -m sse_server`` serves by default.

Its routes are the HTTP contract in DESIGN.md: outside checks and benchmarks rely
on their shape. The channel routes are the hub's (``sse_server.hub``), installed
here too; pages live in ``pages.py``; the AI chat in ``sse_server.ai``.
"""

from __future__ import annotations

from html_stream.demo import FAVICON_SVG, REGIONS, dashboard_page, suspense_page

from ..app import App, HTMLResponse, HTTPError, Request, Response, Sink, StreamingResponse
from ..channels import Engine
from ..config import Config
from ..html import stream_page
from ..hub import install_channels, make_engine
from ..middleware.auth import Authenticator
from ..sse import encode_event
from ..sse.streams import SSE_HEADERS
from ..untrusted import BadInteger, parse_int
from . import pages
from .chat import install_chat
from .status import status_events, status_page

__all__ = ["create_app", "make_engine", "Firehose"]

_MAX_FIREHOSE_EVENTS = 10_000_000
_MAX_FIREHOSE_EVENT_BYTES = 1024 * 1024
_MAX_SUSPENSE_BOUNDARIES = 100
_FIREHOSE_BATCH_BYTES = 32 * 1024  # events ready at once share one write; the client's pace sets the rest


class Firehose(StreamingResponse):
    """``n`` events of ``size`` bytes each, as fast as the client reads."""

    __slots__ = ("n", "size")

    def __init__(self, n: int, size: int) -> None:
        super().__init__(None, 200, list(SSE_HEADERS))
        self.n = n
        self.size = size

    async def stream(self, sink: Sink) -> None:
        payload = "x" * self.size
        batch: list[bytes] = []
        batch_bytes = 0
        for i in range(1, self.n + 1):
            event = encode_event(payload, id=str(i))
            batch.append(event)
            batch_bytes += len(event)
            if batch_bytes >= _FIREHOSE_BATCH_BYTES:
                sink.write(b"".join(batch))
                batch.clear()
                batch_bytes = 0
                await sink.drain()
        if batch:
            sink.write(b"".join(batch))
            await sink.drain()


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_param(name)
    if raw is None:
        return default
    try:
        return parse_int(raw, lo, hi)
    except BadInteger as e:
        raise HTTPError(400, f"{name} {e}") from None


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(pages.INDEX, headers=pages.PAGE_HEADERS)


async def favicon(request: Request) -> Response:
    return Response(FAVICON_SVG, 200, [("Cache-Control", "max-age=86400")], content_type="image/svg+xml")


async def firehose(request: Request) -> Firehose:
    n = _int_param(request, "n", 1000, 0, _MAX_FIREHOSE_EVENTS)
    size = _int_param(request, "size", 64, 0, _MAX_FIREHOSE_EVENT_BYTES)
    return Firehose(n, size)


async def suspense(request: Request) -> Response | StreamingResponse:
    raw = request.query_param("delays", "300,100,200") or ""
    shape = f"delays: 1 to {_MAX_SUSPENSE_BOUNDARIES} comma-separated integers, each 0..60000 ms"
    try:
        delays = [parse_int(d.strip(" "), 0, 60_000) for d in raw.split(",") if d.strip(" ")]
    except BadInteger:
        raise HTTPError(400, shape) from None
    if not 1 <= len(delays) <= _MAX_SUSPENSE_BOUNDARIES:
        raise HTTPError(400, shape)
    return await stream_page(request, suspense_page(delays), csp=True, headers=pages.PAGE_HEADERS)


async def dashboard(request: Request) -> Response | StreamingResponse:
    region = request.query_param("region", "") or None  # "" is the form's "All"
    if region is not None and region not in REGIONS:
        raise HTTPError(400, f"region: one of {', '.join(REGIONS)}, or empty for all")
    return await stream_page(request, dashboard_page(region=region), csp=True, deadline_s=10,
                             headers=pages.PAGE_HEADERS)


async def live(request: Request) -> HTMLResponse:
    return HTMLResponse(pages.LIVE, headers=pages.PAGE_HEADERS)


def create_app(
    config: Config | None = None, engine: Engine | None = None, *, authenticate: Authenticator | None = None,
) -> App:
    """The demo app for ``config``; channels live in ``engine`` (made from the config by
    default, and then closed when the server shuts down).

    ``authenticate`` is the application's own scheme for channel access (see
    middleware/auth.py); without it ``config.jwt_secret_env`` turns on tokens.
    Raises ValueError when an environment variable the config names is unset.
    """
    config = config or Config()
    app = App()
    install_channels(app, config, engine, authenticate=authenticate)  # /channels, /events, /healthz, /readyz
    app.add_route("/", index)
    app.add_route("/favicon.ico", favicon)
    app.add_route("/favicon.svg", favicon)
    app.add_route("/firehose", firehose)
    app.add_route("/suspense", suspense)
    app.add_route("/dashboard", dashboard)
    app.add_route("/live", live)
    app.add_route("/status", status_page)
    app.add_route("/status/events", status_events)
    install_chat(app, config)  # /v1/chat/completions, /v1/models, /chat, /chat/stream(s)
    return app
