"""The app ``python -m sse_server`` serves by default.

Its routes are the HTTP contract in DESIGN.md: outside checks and benchmarks rely
on their shape. Pages live in ``pages.py``; the AI chat in ``sse_server.ai``.
"""

from __future__ import annotations

from ..app import (
    App,
    HTMLResponse,
    HTTPError,
    JSONResponse,
    PlainTextResponse,
    Request,
    Response,
    Sink,
    StreamingResponse,
)
from html_stream.demo import dashboard_page, suspense_page

from ..broker import Broker
from ..config import Config
from ..eventstream import SSE_HEADERS, EventStream
from ..html import stream_page
from ..sse import encode_event
from . import pages
from .chat import install_chat

__all__ = ["create_app", "Firehose"]

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
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise HTTPError(400, f"{name} must be between {lo} and {hi}")
    return value


def create_app(config: Config | None = None) -> App:
    """The demo app; the model routes are built from ``config`` (defaults if None)."""
    app = App()
    broker_box: list[Broker] = []

    async def start_broker() -> None:
        cfg = app.config
        assert cfg is not None
        broker = Broker(cfg.history_size, cfg.max_subscriber_buffer_bytes, cfg.max_channels)
        broker_box.append(broker)
        app.state["broker"] = broker

    app.on_startup.append(start_broker)

    def broker() -> Broker:
        return broker_box[0]

    @app.route("/")
    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(pages.INDEX)

    @app.route("/favicon.ico")
    async def favicon(request: Request) -> Response:
        return Response(b"", 204, [("Cache-Control", "max-age=86400")])

    @app.route("/healthz")
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.route("/channels/{name}/events")
    async def subscribe(request: Request) -> EventStream:
        return EventStream.subscribe(request, broker(), request.path_params["name"])

    @app.route("/channels/{name}/events", methods=["POST"])
    async def publish(request: Request) -> JSONResponse:
        event = request.query_param("event") or None
        try:
            result = broker().publish(request.path_params["name"], await request.text(), event=event)
        except ValueError as e:  # an event name with CR/LF, or text that cannot be encoded
            raise HTTPError(400, str(e)) from None
        return JSONResponse({"id": result.id, "subscribers": result.subscribers}, status=202)

    @app.route("/firehose")
    async def firehose(request: Request) -> Firehose:
        n = _int_param(request, "n", 1000, 0, _MAX_FIREHOSE_EVENTS)
        size = _int_param(request, "size", 64, 0, _MAX_FIREHOSE_EVENT_BYTES)
        return Firehose(n, size)

    @app.route("/suspense")
    async def suspense(request: Request) -> Response | StreamingResponse:
        raw = request.query_param("delays", "300,100,200") or ""
        try:
            delays = [int(d) for d in raw.split(",") if d.strip()]
        except ValueError:
            raise HTTPError(400, "delays must be comma-separated integers (ms)") from None
        if not 1 <= len(delays) <= _MAX_SUSPENSE_BOUNDARIES or not all(0 <= d <= 60_000 for d in delays):
            raise HTTPError(400, f"delays: 1 to {_MAX_SUSPENSE_BOUNDARIES} values, each 0..60000 ms")
        return await stream_page(request, suspense_page(delays), csp=True)

    @app.route("/dashboard")
    async def dashboard(request: Request) -> Response | StreamingResponse:
        return await stream_page(request, dashboard_page(), csp=True, deadline_s=10)

    @app.route("/live")
    async def live(request: Request) -> HTMLResponse:
        return HTMLResponse(pages.LIVE)

    install_chat(app, config or Config())  # /v1/chat/completions, /v1/models, /chat, /chat/stream(s)
    return app
