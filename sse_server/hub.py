"""The channel routes, and the hub: ``python -m sse_server --app hub``.

``install_channels(app, config)`` wires what every app that carries channels needs:
CORS and auth from the config, the publish rate limit, the engine (``--backplane``
or this process's memory), and the routes

    GET  /channels/{name}/events     subscribe (Last-Event-ID resumes)
    POST /channels/{name}/events     publish; 202 {"id": ..., "subscribers": N}
    GET  /events?channel=a&channel=b one stream of several channels
    GET  /healthz, GET /readyz       liveness; readiness (the engine answers)

The demo installs them next to its pages; the hub (``create_app`` here) serves
nothing else (``/metrics`` comes from the server's metrics middleware), so a
production deployment exposes no demo page and no mock model.

Idempotent publishes: a POST with ``Idempotency-Key: <1 to 128 visible ASCII
characters, no quote or backslash>`` (bare, or quoted as a structured-field string) is stored once per
channel and key within the engine's window (``--idempotency-window``): a retry gets
the first answer again, same id, with ``Idempotent-Replayed: true``; the same key
with a different body is a client bug and gets 422. Handlers are module-level and
find the engine in ``request.app.state``.
"""

from __future__ import annotations

import time

from .app import App, HTTPError, JSONResponse, PlainTextResponse, Request
from .channels import (
    ChannelLimitError,
    Engine,
    EngineUnavailableError,
    EventTooLargeError,
    IdempotencyKeyReusedError,
    MemoryEngine,
)
from .clients import TokenBuckets, client_key, retry_after
from .config import Config
from .middleware.auth import AUTH_STATE_KEY, Authenticator, ChannelAuth, install_auth
from .middleware.cors import cors
from .sse.streams import ChannelStream, EventStream, come_back_later

__all__ = ["IDEMPOTENCY_KEY_MAX_CHARS", "create_app", "idempotency_key_of", "install_channels", "make_engine"]

_MAX_CHANNEL_NAME_CHARS = 200  # a name is held per channel and echoed in ids and reset notices
_UNAVAILABLE_RETRY_S = "1"  # a backplane that did not answer: soon, not at once
# A key is remembered per channel for the window (in memory or in Redis): the cap
# bounds what one request can make the engine hold; 128 fits a UUID or a ULID with room.
IDEMPOTENCY_KEY_MAX_CHARS = 128

_ROUTES = (
    "an sse_server hub; it serves:\n"
    "  GET  /channels/{name}/events       subscribe (Last-Event-ID resumes)\n"
    "  POST /channels/{name}/events       publish the body; ?event=NAME; Idempotency-Key makes retries safe\n"
    "  GET  /events?channel=a&channel=b   one stream of several channels\n"
    "  GET  /healthz, /readyz, /metrics\n"
)


def _channel_name(name: str) -> str:
    """A client-chosen channel name, or 400: it ends up in ids, which carry no control characters."""
    if not 1 <= len(name) <= _MAX_CHANNEL_NAME_CHARS:
        raise HTTPError(400, f"a channel name has 1 to {_MAX_CHANNEL_NAME_CHARS} characters")
    if not name.isprintable():
        raise HTTPError(400, "a channel name has no control characters")
    return name


def idempotency_key_of(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, or None; 400 for a malformed or repeated one.

    draft-ietf-httpapi-idempotency-key-header makes it a structured-field string
    (``"abc"``); a bare token is what most clients send, so both are accepted.
    """
    values = request.headers.get_all("idempotency-key")
    if not values:
        return None
    shape = (f"Idempotency-Key: 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters "
             "(no quote or backslash), sent once")
    if len(values) > 1:
        raise HTTPError(400, shape)
    key = values[0].strip(" \t")
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    # Visible ASCII, less the quote and backslash that would need escaping in the quoted form.
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_CHARS or not all("!" <= c <= "~" and c not in '"\\' for c in key):
        raise HTTPError(400, shape)
    return key


def _engine(request: Request) -> Engine:
    assert request.app is not None
    engine: Engine = request.app.state["engine"]
    return engine


def _config(request: Request) -> Config:
    assert request.app is not None
    config: Config = request.app.state["config"]
    return config


def _auth(request: Request) -> ChannelAuth | None:
    assert request.app is not None
    auth: ChannelAuth | None = request.app.state.get(AUTH_STATE_KEY)
    return auth


async def _subscribe(request: Request, channels: list[str], *, tag_channels: bool) -> ChannelStream | EventStream:
    try:
        return await ChannelStream.subscribe(request, _engine(request), channels, tag_channels=tag_channels)
    except ChannelLimitError as e:
        raise HTTPError(503, str(e), [("Retry-After", "5")]) from None
    except EngineUnavailableError as e:
        return come_back_later(str(e))  # not a 503: that would stop an EventSource for good


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


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


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
    key = idempotency_key_of(request)
    _check_publish_rate(request)
    event = request.query_param("event") or None
    try:
        result = await _engine(request).publish(name, await request.text(), event=event, idempotency_key=key)
    except ChannelLimitError as e:
        raise HTTPError(503, str(e), [("Retry-After", "5")]) from None
    except EngineUnavailableError as e:  # not acknowledged: never a 202 for an event that may not be stored
        raise HTTPError(503, str(e), [("Retry-After", _UNAVAILABLE_RETRY_S)]) from None
    except EventTooLargeError as e:
        raise HTTPError(413, str(e)) from None
    except IdempotencyKeyReusedError as e:
        raise HTTPError(422, str(e)) from None
    except ValueError as e:  # an event name with CR/LF, or text that cannot be encoded
        raise HTTPError(400, str(e)) from None
    headers = [("Idempotent-Replayed", "true")] if result.replayed else []
    return JSONResponse({"id": result.id, "subscribers": result.subscribers}, status=202, headers=headers)


async def index(request: Request) -> PlainTextResponse:
    """The hub has no pages: a 404 that says what it does serve."""
    return PlainTextResponse(_ROUTES, status=404)


def make_engine(config: Config) -> Engine:
    """The engine ``config`` asks for: Redis with ``--backplane``, else this process's memory."""
    if config.backplane:
        from .channels.redis import RedisEngine  # the optional extra: only when configured

        return RedisEngine(
            config.backplane, config.history_size, config.max_channels, history_bytes=config.history_bytes,
            max_event_bytes=config.max_event_bytes, history_ttl_s=config.history_ttl_s,
            timeout_s=config.backplane_timeout_s, idempotency_window_s=config.idempotency_window_s,
        )
    return MemoryEngine(
        config.history_size, config.max_channels, history_bytes=config.history_bytes,
        history_total_bytes=config.history_total_bytes, max_event_bytes=config.max_event_bytes,
        idempotency_window_s=config.idempotency_window_s, idempotency_keys=config.idempotency_keys,
    )


def install_channels(
    app: App, config: Config, engine: Engine | None = None, *, authenticate: Authenticator | None = None,
) -> Engine:
    """CORS, auth, the publish rate and the channel routes of ``config`` on ``app``.

    Channels live in ``engine`` (made from the config by default, and then closed when
    the server shuts down); returns it. ``authenticate`` is the application's own
    scheme for channel access (see middleware/auth.py); without it
    ``config.jwt_secret_env`` turns on tokens. Raises ValueError when an environment
    variable the config names is unset.
    """
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
    app.add_route("/healthz", healthz)
    app.add_route("/readyz", readyz)
    app.add_route("/channels/{name}/events", subscribe)
    app.add_route("/channels/{name}/events", publish, methods=["POST"])
    app.add_route("/events", subscribe_many)
    return engine


def create_app(
    config: Config | None = None, engine: Engine | None = None, *, authenticate: Authenticator | None = None,
) -> App:
    """The hub for ``config``: the channel routes and nothing else (see install_channels)."""
    app = App()
    install_channels(app, config or Config(), engine, authenticate=authenticate)
    app.add_route("/", index)
    return app
