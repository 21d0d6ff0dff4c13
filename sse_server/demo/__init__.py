"""The app ``python -m sse_server`` serves by default.

Its routes are the HTTP contract in DESIGN.md: outside checks and benchmarks rely
on their shape. Pages live in ``pages.py``; the AI chat in ``sse_server.ai``.
Handlers are module-level and find the channel engine in ``request.app.state``.
"""

from __future__ import annotations

import time

from html_stream.demo import FAVICON_SVG, REGIONS, dashboard_page, suspense_page

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
from ..channels import ChannelLimitError, Engine, EngineUnavailableError, EventTooLargeError, MemoryEngine
from ..clients import TokenBuckets, client_key, retry_after
from ..config import Config
from ..html import stream_page
from ..middleware.auth import AUTH_STATE_KEY, Authenticator, ChannelAuth, install_auth
from ..middleware.cors import cors
from ..sse import encode_event
from ..sse.streams import SSE_HEADERS, ChannelStream, EventStream, come_back_later
from ..untrusted import BadInteger, parse_int
from . import pages
from .chat import install_chat
from .status import status_events, status_page

__all__ = ["create_app", "make_engine", "Firehose"]

_MAX_FIREHOSE_EVENTS = 10_000_000
_MAX_FIREHOSE_EVENT_BYTES = 1024 * 1024
_MAX_SUSPENSE_BOUNDARIES = 100
_MAX_CHANNEL_NAME_CHARS = 200  # a name is held per channel and echoed in ids and reset notices
_FIREHOSE_BATCH_BYTES = 32 * 1024  # events ready at once share one write; the client's pace sets the rest
_UNAVAILABLE_RETRY_S = "1"  # a backplane that did not answer: soon, not at once


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


def _channel_name(name: str) -> str:
    """A client-chosen channel name, or 400: it ends up in ids, which carry no control characters."""
    if not 1 <= len(name) <= _MAX_CHANNEL_NAME_CHARS:
        raise HTTPError(400, f"a channel name has 1 to {_MAX_CHANNEL_NAME_CHARS} characters")
    if not name.isprintable():
        raise HTTPError(400, "a channel name has no control characters")
    return name


def _engine(request: Request) -> Engine:
    assert request.app is not None
    engine: Engine = request.app.state["engine"]
    return engine


def _config(request: Request) -> Config:
    assert request.app is not None
    config: Config = request.app.state["config"]
    return config


async def _subscribe(request: Request, channels: list[str], *, tag_channels: bool) -> ChannelStream | EventStream:
    try:
        return await ChannelStream.subscribe(request, _engine(request), channels, tag_channels=tag_channels)
    except ChannelLimitError as e:
        raise HTTPError(503, str(e), [("Retry-After", "5")]) from None
    except EngineUnavailableError as e:
        return come_back_later(str(e))  # not a 503: that would stop an EventSource for good


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(pages.INDEX, headers=pages.PAGE_HEADERS)


async def favicon(request: Request) -> Response:
    return Response(FAVICON_SVG, 200, [("Cache-Control", "max-age=86400")], content_type="image/svg+xml")


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


def _auth(request: Request) -> ChannelAuth | None:
    assert request.app is not None
    auth: ChannelAuth | None = request.app.state.get(AUTH_STATE_KEY)
    return auth


async def _authorized_subscribe(
    request: Request, channels: list[str], *, tag_channels: bool,
) -> ChannelStream | EventStream:
    """Subscribe after the auth check (when auth is on); the stream ends when its token does."""
    auth = _auth(request)
    if auth is None:
        return await _subscribe(request, channels, tag_channels=tag_channels)
    principal = await auth.check_subscribe(request, channels)
    stream = await _subscribe(request, channels, tag_channels=tag_channels)
    if isinstance(stream, ChannelStream):
        auth.end_at_expiry(stream, principal)
    return stream


async def readyz(request: Request) -> PlainTextResponse:
    """Readiness, for a load balancer: the channel engine is reachable (liveness is /healthz)."""
    if not await _engine(request).ready():
        raise HTTPError(503, "the channel engine is unreachable", [("Retry-After", _UNAVAILABLE_RETRY_S)])
    return PlainTextResponse("ready\n")


async def subscribe(request: Request) -> ChannelStream | EventStream:
    return await _authorized_subscribe(request, [_channel_name(request.path_params["name"])], tag_channels=False)


async def subscribe_many(request: Request) -> ChannelStream | EventStream:
    """``GET /events?channel=a&channel=b``: one stream; every id is ``<epoch>-<seq>;<channel>``,
    however many channels it names, so a page reads the channel the same way always."""
    names = list(dict.fromkeys(request.query.get("channel", [])))
    limit = _config(request).max_channels_per_stream
    if not names:
        raise HTTPError(400, "name at least one channel: /events?channel=a&channel=b")
    if len(names) > limit:
        raise HTTPError(400, f"at most {limit} channels on one stream")
    return await _authorized_subscribe(request, [_channel_name(n) for n in names], tag_channels=True)


def _check_publish_rate(request: Request) -> None:
    """429 with Retry-After for a client publishing faster than --publish-rate allows."""
    assert request.app is not None
    buckets: TokenBuckets | None = request.app.state["publish_rate"]
    key = client_key(request)
    if buckets is None or key is None:
        return
    wait = buckets.take(key, time.monotonic())
    if wait:
        raise HTTPError(429, "publishing too fast; slow down", [("Retry-After", retry_after(wait))])


async def publish(request: Request) -> JSONResponse:
    name = _channel_name(request.path_params["name"])
    auth = _auth(request)
    if auth is not None:
        await auth.check_publish(request, name)
    _check_publish_rate(request)
    event = request.query_param("event") or None
    try:
        result = await _engine(request).publish(name, await request.text(), event=event)
    except ChannelLimitError as e:
        raise HTTPError(503, str(e), [("Retry-After", "5")]) from None
    except EngineUnavailableError as e:  # not acknowledged: never a 202 for an event that may not be stored
        raise HTTPError(503, str(e), [("Retry-After", _UNAVAILABLE_RETRY_S)]) from None
    except EventTooLargeError as e:
        raise HTTPError(413, str(e)) from None
    except ValueError as e:  # an event name with CR/LF, or text that cannot be encoded
        raise HTTPError(400, str(e)) from None
    return JSONResponse({"id": result.id, "subscribers": result.subscribers}, status=202)


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


def make_engine(config: Config) -> Engine:
    """The engine ``config`` asks for: Redis with ``--backplane``, else this process's memory."""
    if config.backplane:
        from ..channels.redis import RedisEngine  # the optional extra: only when configured

        return RedisEngine(
            config.backplane, config.history_size, config.max_channels, history_bytes=config.history_bytes,
            max_event_bytes=config.max_event_bytes, history_ttl_s=config.history_ttl_s,
            timeout_s=config.backplane_timeout_s,
        )
    return MemoryEngine(
        config.history_size, config.max_channels, history_bytes=config.history_bytes,
        history_total_bytes=config.history_total_bytes, max_event_bytes=config.max_event_bytes,
    )


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
    if config.cors_origins:
        app.add_middleware(cors(config.cors_origins))  # outermost: a preflight carries no credentials
    install_auth(app, config, authenticate)
    app.state["config"] = config
    app.state["publish_rate"] = (
        TokenBuckets(config.publish_rate, config.publish_burst) if config.publish_rate > 0 else None
    )
    if engine is None:
        engine = make_engine(config)
        app.on_shutdown.append(engine.close)
    app.state["engine"] = engine
    app.add_route("/", index)
    app.add_route("/favicon.ico", favicon)
    app.add_route("/favicon.svg", favicon)
    app.add_route("/healthz", healthz)
    app.add_route("/readyz", readyz)
    app.add_route("/channels/{name}/events", subscribe)
    app.add_route("/channels/{name}/events", publish, methods=["POST"])
    app.add_route("/events", subscribe_many)
    app.add_route("/firehose", firehose)
    app.add_route("/suspense", suspense)
    app.add_route("/dashboard", dashboard)
    app.add_route("/live", live)
    app.add_route("/status", status_page)
    app.add_route("/status/events", status_events)
    install_chat(app, config)  # /v1/chat/completions, /v1/models, /chat, /chat/stream(s)
    return app
