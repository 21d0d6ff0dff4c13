"""``python -m sse_server``: parse flags into a Config, serve an app until a signal.

This is the only place that calls ``sys.exit``. Every flag value is checked by its
``type=`` validator, so nonsense (``--port 70000``, ``--backlog 0``, ``--heartbeat nan``)
is an argparse error naming the flag and exit status 2, never a traceback from deep in
the server. The legal range of each flag is in its help where it is not obvious.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib
import inspect
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import __version__
from .app import App
from .auth import DEFAULT_SECRET_ENV
from .clients import TrustedPeers
from .config import Config
from .server import Server, metrics_token, tls_context

__all__ = ["main", "build_parser", "build_token_parser", "configure_logging", "load_app", "prepare", "AppSpecError",
           "BUILTIN_APPS", "PREPARE_ERRORS"]

log = logging.getLogger("sse_server")

_DEFAULTS = Config()

# listen() and setsockopt() take a C int: a larger backlog fails at bind, a larger
# send buffer on every stream.
_C_INT_MAX = 2**31 - 1
LOG_LEVELS = ("debug", "info", "warning", "error")
# Each worker is a whole interpreter (~30 MB): a typo such as 2000 would start 2000.
_MAX_WORKERS = 256


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer in ``[low, high]`` (no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _finite(*, positive: bool) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float, ``> 0`` if ``positive`` else ``>= 0``.

    ``nan`` and ``inf`` are refused: a nan deadline never compares true, and where
    "never" makes sense a flag already spells it ``0``.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
        return value

    return parse


_port = _int_range(0, 65535)
_count = _int_range(1)  # a cap of 0 would refuse everything
_size = _int_range(0)
_positive_s = _finite(positive=True)
_nonnegative = _finite(positive=False)


def _peers(text: str) -> list[str]:
    """``--forwarded-allow-ips``: a comma list of addresses or CIDRs, or ``*``."""
    specs = [part.strip() for part in text.split(",") if part.strip()]
    try:
        TrustedPeers(specs)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"want addresses or CIDRs (or *), got {text!r}: {e}") from None
    return specs


class _Extend(argparse.Action):
    """A repeatable list flag whose first use replaces the default instead of adding to it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        seen = f"_{self.dest}_given"
        current = list(getattr(namespace, self.dest)) if getattr(namespace, seen, False) else []
        assert isinstance(values, list)
        setattr(namespace, self.dest, tuple(current + values))
        setattr(namespace, seen, True)


def _log_level(text: str) -> str:
    """Any case: ``DEBUG``, ``Info``; checked against LOG_LEVELS by ``choices``."""
    return text.lower()


def build_parser(prog: str = "python -m sse_server") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve Server-Sent Events and streamed HTML. With no --app, serves the demo.",
        epilog="Counts and the *-bytes limits are whole numbers; seconds and milliseconds may be "
               "fractional but not nan or inf.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"sse_server {__version__}")
    p.add_argument("--host", default=_DEFAULTS.host, help="address to bind (use :: for IPv6)")
    p.add_argument("--port", type=_port, default=_DEFAULTS.port, help="port to bind, 0-65535; 0 picks a free one")
    p.add_argument("--app", default=None, metavar="MODULE:ATTR|hub|demo",
                   help="serve this App instead of the demo, e.g. myproject.web:app; ATTR may also be "
                        "a function returning the App, given the Config if it takes an argument. "
                        "Built in: hub (only the channel routes, /events, /healthz, /readyz and /metrics: "
                        "no demo page, no model) and demo")
    p.add_argument("--log-level", default="info", type=_log_level, choices=LOG_LEVELS,
                   help="log level, in any case; info prints one access line per request")
    g = p.add_argument_group("limits")
    g.add_argument("--max-request-line-bytes", type=_count, default=_DEFAULTS.max_request_line_bytes,
                   help="longest request line (414 beyond); at least 1")
    g.add_argument("--max-header-bytes", type=_count, default=_DEFAULTS.max_header_bytes,
                   help="largest request head (431 beyond); at least 1")
    g.add_argument("--max-header-count", type=_count, default=_DEFAULTS.max_header_count,
                   help="most request headers (431 beyond); at least 1, as HTTP/1.1 requires Host")
    g.add_argument("--max-body-bytes", type=_size, default=_DEFAULTS.max_body_bytes,
                   help="largest request body (413 beyond); 0 refuses every body")
    g.add_argument("--max-connections", type=_count, default=_DEFAULTS.max_connections,
                   help="open connections before new ones get 503; at least 1")
    g.add_argument("--head-timeout", type=_positive_s, default=_DEFAULTS.head_timeout_s, dest="head_timeout_s",
                   help="seconds to receive a whole request head (408 beyond); more than 0")
    g.add_argument("--keepalive-timeout", type=_positive_s, default=_DEFAULTS.keepalive_timeout_s,
                   dest="keepalive_timeout_s", help="seconds an idle keep-alive connection is kept; more than 0")
    g.add_argument("--body-timeout", type=_positive_s, default=_DEFAULTS.body_timeout_s, dest="body_timeout_s",
                   help="seconds a declared request body has to arrive (408 beyond); more than 0")
    g.add_argument("--write-timeout", type=_positive_s, default=_DEFAULTS.write_timeout_s, dest="write_timeout_s",
                   help="seconds a client may take no bytes before it is dropped (streams included); more than 0")
    g.add_argument("--shutdown-timeout", type=_nonnegative, default=_DEFAULTS.shutdown_timeout_s,
                   dest="shutdown_timeout_s",
                   help="seconds in-flight responses get on shutdown; 0 closes them at once")
    g.add_argument("--backlog", type=_int_range(1, _C_INT_MAX), default=_DEFAULTS.backlog,
                   help="listen backlog: connections the kernel queues before we accept them; at least 1 "
                        "(the kernel may cap it lower)")
    t = p.add_argument_group("production (TLS, proxies, per-client limits)")
    t.add_argument("--certfile", default=_DEFAULTS.certfile, metavar="PATH",
                   help="PEM certificate chain: serve HTTPS (TLS 1.2+) instead of HTTP")
    t.add_argument("--keyfile", default=_DEFAULTS.keyfile, metavar="PATH",
                   help="PEM private key of --certfile (omit if the certificate file holds it)")
    t.add_argument("--forwarded-allow-ips", type=_peers, action=_Extend, default=_DEFAULTS.forwarded_allow_ips,
                   metavar="ADDRS",
                   help="proxies whose Forwarded / X-Forwarded-For / X-Forwarded-Proto are believed: addresses "
                        "or CIDRs, comma-separated or repeated, or * for any peer; they are not limited themselves")
    t.add_argument("--max-connections-per-client", type=_size, default=_DEFAULTS.max_connections_per_client,
                   help="open connections one client address may hold (429 beyond); 0 turns it off")
    t.add_argument("--connect-rate", type=_nonnegative, default=_DEFAULTS.connect_rate,
                   help="new connections per second one client may open on average (429 beyond); 0 turns it off")
    t.add_argument("--connect-burst", type=_count, default=_DEFAULTS.connect_burst,
                   help="new connections one client may open at once before --connect-rate applies; at least 1")
    t.add_argument("--publish-rate", type=_nonnegative, default=_DEFAULTS.publish_rate,
                   help="publishes per second one client may make on average (429 beyond); 0 turns it off")
    t.add_argument("--publish-burst", type=_count, default=_DEFAULTS.publish_burst,
                   help="publishes one client may make at once before --publish-rate applies; at least 1")
    s = p.add_argument_group("server-sent events")
    s.add_argument("--heartbeat", type=_nonnegative, default=_DEFAULTS.heartbeat_s, dest="heartbeat_s",
                   help="seconds of idle before a heartbeat comment; 0 turns heartbeats off")
    s.add_argument("--retry-ms", type=_int_range(-1), default=_DEFAULTS.retry_ms,
                   help="reconnection delay hint sent to clients; -1 sends no retry: field")
    s.add_argument("--history-size", type=_count, default=_DEFAULTS.history_size,
                   help="events kept per channel for Last-Event-ID resume; at least 1")
    s.add_argument("--history-bytes", type=_count, default=_DEFAULTS.history_bytes,
                   help="bytes of history kept per channel (an event costs twice its encoded size); at least 1")
    s.add_argument("--history-total-bytes", type=_count, default=_DEFAULTS.history_total_bytes,
                   help="bytes of history across all channels; least recently used channels lose events first; "
                        "at least 1")
    s.add_argument("--max-event-bytes", type=_count, default=_DEFAULTS.max_event_bytes,
                   help="largest event after encoding; a bigger publish gets 413; at least 1")
    s.add_argument("--max-channels", type=_count, default=_DEFAULTS.max_channels,
                   help="channels kept; past this the least recently used idle one is forgotten; at least 1")
    s.add_argument("--max-channels-per-stream", type=_count, default=_DEFAULTS.max_channels_per_stream,
                   help="channels one GET /events stream may name (400 beyond); at least 1")
    s.add_argument("--max-subscriber-buffer-bytes", type=_size, default=_DEFAULTS.max_subscriber_buffer_bytes,
                   help="unsent bytes a slow subscriber may hold before it is disconnected; "
                        "0 drops it as soon as a write does not fit the kernel buffer")
    s.add_argument("--stream-send-buffer-bytes", type=_int_range(0, _C_INT_MAX),
                   default=_DEFAULTS.stream_send_buffer_bytes,
                   help="kernel send buffer of each stream (0: left to the kernel)")
    s.add_argument("--idempotency-window", type=_positive_s, default=_DEFAULTS.idempotency_window_s,
                   dest="idempotency_window_s",
                   help="seconds a publish's Idempotency-Key is remembered: a retry within it is stored once; "
                        "more than 0")
    s.add_argument("--idempotency-keys", type=_count, default=_DEFAULTS.idempotency_keys,
                   help="idempotency keys the in-memory engine remembers (oldest forgotten first); at least 1")
    b = p.add_argument_group("scaling out")
    b.add_argument("--backplane", default=_DEFAULTS.backplane, metavar="URL", type=_backplane_url,
                   help="share channels through Redis: redis://[:password@]host:port/db (rediss:// for TLS); "
                        "needs pip install 'sse_server[redis]'")
    b.add_argument("--history-ttl", type=_positive_s, default=_DEFAULTS.history_ttl_s, dest="history_ttl_s",
                   help="seconds a channel's history stays in Redis after its last publish; more than 0")
    b.add_argument("--backplane-timeout", type=_positive_s, default=_DEFAULTS.backplane_timeout_s,
                   dest="backplane_timeout_s",
                   help="seconds each Redis command may take; a publish past it answers 503; more than 0")
    b.add_argument("--workers", type=_int_range(1, _MAX_WORKERS), default=_DEFAULTS.workers,
                   help="processes serving the one port, under a supervisor that restarts a worker that dies "
                        "and, on SIGHUP, each worker in turn; more than 1 needs --backplane for the demo's "
                        f"channels; 1 to {_MAX_WORKERS}")
    o = p.add_argument_group("observability and compression")
    o.add_argument("--access-log-format", choices=("text", "json"), default=_DEFAULTS.access_log_format,
                   help="access log lines (at --log-level info): text, or one JSON object per request "
                        "and per ended stream")
    o.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=_DEFAULTS.metrics,
                   help="serve GET /metrics in the Prometheus text format")
    o.add_argument("--metrics-token-env", default=_DEFAULTS.metrics_token_env, metavar="NAME",
                   help="environment variable holding a bearer token that GET /metrics then requires")
    o.add_argument("--compression", action=argparse.BooleanOptionalAction, default=_DEFAULTS.compression,
                   help="gzip (when the client accepts it) plain responses over --compress-min-bytes and "
                        "streamed HTML pages, flushed per write")
    o.add_argument("--compress-min-bytes", type=_size, default=_DEFAULTS.compress_min_bytes,
                   help="smallest plain response body that is compressed; 0 compresses every one")
    o.add_argument("--compress-sse", action=argparse.BooleanOptionalAction, default=_DEFAULTS.compress_sse,
                   help="gzip event streams too (a compressor per subscriber; each event flushed at once)")
    m = p.add_argument_group("chat model (/v1/chat/completions, /chat)")
    m.add_argument("--max-jobs-per-client", type=_count, default=_DEFAULTS.max_jobs_per_client,
                   help="resumable generations (POST /chat/streams) one client address may run at once "
                        "(429 beyond); at least 1")
    m.add_argument("--model-tokens-per-s", type=_nonnegative, default=_DEFAULTS.model_tokens_per_s,
                   help="mock model pacing after the first token (0: all at once)")
    m.add_argument("--model-first-token-ms", type=_nonnegative, default=_DEFAULTS.model_first_token_ms,
                   help="mock model latency before its first token; 0 or more")
    m.add_argument("--upstream", default=_DEFAULTS.upstream_url, dest="upstream_url", metavar="URL",
                   type=_upstream_url,
                   help="relay an OpenAI-compatible API at this base URL (e.g. https://host/v1) "
                        "instead of the mock model")
    m.add_argument("--upstream-key-env", default=_DEFAULTS.upstream_key_env, metavar="NAME",
                   help="environment variable holding the upstream API key (sent as a Bearer token)")
    a = p.add_argument_group("access (see README: Production)")
    a.add_argument("--jwt-secret-env", default=_DEFAULTS.jwt_secret_env, metavar="NAME",
                   help="turn on token auth: HS256 tokens signed with the secret in this environment variable "
                        f"(at least 32 bytes; by convention {DEFAULT_SECRET_ENV}) grant publish and subscribe")
    a.add_argument("--jwt-leeway", type=_nonnegative, default=_DEFAULTS.jwt_leeway_s, dest="jwt_leeway_s",
                   help="seconds of clock skew allowed on a token's exp and nbf; 0 or more")
    a.add_argument("--public-channel", action="append", type=_channel_pattern, dest="public_channels",
                   default=None, metavar="PATTERN",
                   help="with token auth, anyone may subscribe to channels matching this (a name, prefix*, or *); "
                        "repeatable")
    a.add_argument("--api-key-env", default=_DEFAULTS.api_key_env, metavar="NAME",
                   help="require Authorization: Bearer <the key in this environment variable> on /v1/* and the "
                        "chat API")
    a.add_argument("--cors-origin", action="append", type=_origin, dest="cors_origins", default=None,
                   metavar="ORIGIN",
                   help="let pages on this origin (scheme://host[:port]) call the server, with credentials; "
                        "* allows every origin without credentials; repeatable")
    return p


def _backplane_url(url: str) -> str:
    from .channels.redis import check_backplane_url  # imports no client library

    try:
        return check_backplane_url(url)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _channel_pattern(text: str) -> str:
    if not text or not text.isprintable():
        raise argparse.ArgumentTypeError(f"a channel pattern is a name, prefix* or *, got {text!r}")
    return text


def _origin(text: str) -> str:
    from .middleware.cors import check_origin

    try:
        return check_origin(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _upstream_url(url: str) -> str:
    from .ai.upstream import Endpoint

    try:
        Endpoint.parse(url)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return url


# --app names without a colon: the apps this package ships.
BUILTIN_APPS = {"hub": "sse_server.hub:create_app", "demo": "sse_server.demo:create_app"}


class AppSpecError(ValueError):
    """The user's ``--app MODULE:ATTR`` does not name an App we can serve."""


def _import_module(module_name: str) -> ModuleType:
    """``importlib.import_module``, telling "not there" from "there but broken"."""
    try:
        return importlib.import_module(module_name)
    except Exception as e:  # the user's module ran and raised: report it, do not crash
        # e.name is the module found missing: the one asked for, or a package on its
        # path, means "not found"; any other was imported by the module and failed.
        missing = e.name if isinstance(e, ModuleNotFoundError) else None
        if missing is not None and (module_name == missing or module_name.startswith(missing + ".")):
            raise AppSpecError(f"--app: module {missing!r} not found; is its folder on PYTHONPATH?") from None
        raise AppSpecError(f"while importing {module_name}: {type(e).__name__}: {e}") from None


def load_app(spec: str, config: Config | None = None) -> App:
    """Import ``module:attr``: an App, or a factory returning one, called with the
    Config when it takes an argument (``create_app(config)``); or a built-in name
    (BUILTIN_APPS: ``hub``, ``demo``).

    Raises AppSpecError when the spec does not lead to an App.
    """
    spec = BUILTIN_APPS.get(spec, spec)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppSpecError(f"--app wants MODULE:ATTR or one of {', '.join(BUILTIN_APPS)}, got {spec!r}")
    if module_name.startswith("."):
        raise AppSpecError(f"--app wants an absolute module name, got {module_name!r}")
    module = _import_module(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise AppSpecError(f"--app: module {module_name} has no attribute {attr!r}") from None
    if inspect.iscoroutinefunction(obj):
        raise AppSpecError(f"{spec} is a route handler, not an App; pass the App it is registered on "
                           "(an App factory is a plain def returning the App)")
    if not isinstance(obj, App) and callable(obj):
        takes_config = bool(inspect.signature(obj).parameters)
        made = obj(config or Config()) if takes_config else obj()
        if not isinstance(made, App):
            raise AppSpecError(f"{spec} returned {type(made).__name__}, not an sse_server.App")
        return made
    if not isinstance(obj, App):
        raise AppSpecError(f"{spec} is {type(obj).__name__}, not an sse_server.App")
    return obj


def config_from_args(args: argparse.Namespace) -> Config:
    names = {f.name for f in dataclasses.fields(Config)}
    # Repeatable flags collect a list (None when never given); the Config holds tuples.
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}
    return Config(**{k: v for k, v in values.items() if v is not None or getattr(_DEFAULTS, k) is None})


async def serve(app: App, config: Config) -> None:
    server = Server(app, config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown()))
    settle_collector()
    log.info("serving on %s (Ctrl+C to stop)", server.url)
    await server.serve_forever()
    log.info("stopped")


_GC_YOUNG_THRESHOLD = 10_000  # net allocations between young collections (CPython's default: 700)


def settle_collector() -> None:
    """Tune the garbage collector for serving, once start-up is over (a server and each worker)."""
    # Everything allocated at start-up lives forever; keep the collector off it so
    # its pauses scale with per-request garbage, not with the heap.
    gc.collect()
    gc.freeze()
    # Requests in flight keep thousands of young objects alive across awaits (tasks,
    # futures, timers, per-request state), and every young collection walks them all:
    # at CPython's default of 700 allocations a streamed 20-boundary page paid 0.1-0.25 ms
    # of collector CPU. A larger young generation lets most of it die first.
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def build_token_parser(prog: str = "python -m sse_server token") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Print an HS256 token for a server run with --jwt-secret-env, signed with the same secret.",
        epilog=f"Example: {DEFAULT_SECRET_ENV}=... {prog} --subscribe 'orders/*' --sub alice --exp 3600",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--publish", action="append", default=[], type=_channel_pattern, metavar="PATTERN",
                   help="channels the token may publish to (a name, prefix*, or *); repeatable")
    p.add_argument("--subscribe", action="append", default=[], type=_channel_pattern, metavar="PATTERN",
                   help="channels the token may subscribe to; repeatable")
    p.add_argument("--exp", type=_int_range(1), default=3600, metavar="SECONDS",
                   help="seconds until the token expires (a stream it opened ends then); at least 1")
    p.add_argument("--sub", default=None, metavar="SUBJECT", help="who the token names (per-client limits count by it)")
    p.add_argument("--jwt-secret-env", default=DEFAULT_SECRET_ENV, metavar="NAME",
                   help="environment variable holding the secret")
    return p


def token_main(argv: list[str], prog: str) -> None:
    """``python -m sse_server token ...``: print a token and exit."""
    from .auth import mint_token

    args = build_token_parser(f"{prog} token").parse_args(argv)
    secret = os.environ.get(args.jwt_secret_env)
    if not secret:
        print(f"error: environment variable {args.jwt_secret_env} (--jwt-secret-env) is not set or empty",
              file=sys.stderr)
        sys.exit(2)
    try:
        token = mint_token(secret, publish=args.publish, subscribe=args.subscribe, exp_s=args.exp, sub=args.sub)
    except ValueError as e:
        print(f"error: {args.jwt_secret_env}: {e}", file=sys.stderr)
        sys.exit(2)
    print(token)


def main(argv: list[str] | None = None) -> None:
    """The entry point of ``python -m sse_server`` and of the ``sse-server`` script.

    ``python -m sse_server token ...`` mints a token instead of serving (build_token_parser).
    """
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = script if script.startswith("sse-server") else "python -m sse_server"
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        token_main(argv[1:], prog)
        return
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config, app = prepare(args)
    except PREPARE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if config.workers > 1:
        from .workers import supervise, workers_refusal

        refusal = workers_refusal(app, config)
        if refusal:
            parser.error(refusal)
        del app  # each worker builds its own; this one only proved that it can be built
        try:
            status = supervise(argv, config)
        except OSError as e:
            print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:  # outside the supervisor's own handlers: no worker is running
            status = 0
        sys.exit(status)
    try:
        asyncio.run(serve(app, config))
    except OSError as e:
        print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


def configure_logging(level: str, tag: str = "") -> None:
    """Log lines to stderr at ``level``; ``tag`` (a worker's) follows the logger name."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s",
    )


# What prepare() raises for a configuration or an --app that cannot be served (exit 2).
PREPARE_ERRORS = (ImportError, AttributeError, TypeError, ValueError)


def prepare(args: argparse.Namespace) -> tuple[Config, App]:
    """The Config of parsed flags and the App they name, checked before anything binds.

    Raises one of PREPARE_ERRORS, saying what is wrong.
    """
    config = config_from_args(args)
    if config.keyfile and not config.certfile:
        raise ValueError("--keyfile needs --certfile")
    if config.certfile:
        try:  # a missing or mismatched file is said now, not at the first connection
            tls_context(config.certfile, config.keyfile)
        except OSError as e:
            raise ValueError(f"cannot load --certfile {config.certfile} "
                             f"(--keyfile {config.keyfile}): {e}") from None
    metrics_token(config)  # refuse to start with metrics that were to be protected left open
    if args.app:
        return config, load_app(args.app, config)
    from .demo import create_app

    return config, create_app(config)
