"""``python -m sse_server``: parse flags into a Config, serve an app until a signal.

This is the only place that calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib
import inspect
import logging
import signal
import sys

from .app import App
from .config import Config
from .server import Server

__all__ = ["main", "build_parser", "load_app"]

log = logging.getLogger("sse_server")

_DEFAULTS = Config()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sse_server",
        description="Serve Server-Sent Events and streamed HTML. With no --app, serves the demo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=_DEFAULTS.host, help="address to bind (use :: for IPv6)")
    p.add_argument("--port", type=int, default=_DEFAULTS.port, help="port to bind; 0 picks a free one")
    p.add_argument("--app", default=None, metavar="MODULE:ATTR",
                   help="serve this App instead of the demo, e.g. myproject.web:app")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level; info prints one access line per request")
    g = p.add_argument_group("limits")
    g.add_argument("--max-request-line-bytes", type=int, default=_DEFAULTS.max_request_line_bytes,
                   help="longest request line (414 beyond)")
    g.add_argument("--max-header-bytes", type=int, default=_DEFAULTS.max_header_bytes,
                   help="largest request head (431 beyond)")
    g.add_argument("--max-header-count", type=int, default=_DEFAULTS.max_header_count,
                   help="most request headers (431 beyond)")
    g.add_argument("--max-body-bytes", type=int, default=_DEFAULTS.max_body_bytes,
                   help="largest request body (413 beyond)")
    g.add_argument("--max-connections", type=int, default=_DEFAULTS.max_connections,
                   help="open connections before new ones get 503")
    g.add_argument("--head-timeout", type=float, default=_DEFAULTS.head_timeout_s, dest="head_timeout_s",
                   help="seconds to receive a whole request head (408 beyond)")
    g.add_argument("--keepalive-timeout", type=float, default=_DEFAULTS.keepalive_timeout_s,
                   dest="keepalive_timeout_s", help="seconds an idle keep-alive connection is kept")
    g.add_argument("--body-timeout", type=float, default=_DEFAULTS.body_timeout_s, dest="body_timeout_s",
                   help="seconds a declared request body has to arrive (408 beyond)")
    g.add_argument("--write-timeout", type=float, default=_DEFAULTS.write_timeout_s, dest="write_timeout_s",
                   help="seconds a client may take no bytes before it is dropped (streams included)")
    g.add_argument("--shutdown-timeout", type=float, default=_DEFAULTS.shutdown_timeout_s,
                   dest="shutdown_timeout_s", help="seconds in-flight responses get on shutdown")
    g.add_argument("--backlog", type=int, default=_DEFAULTS.backlog,
                   help="listen backlog: connections the kernel queues before we accept them")
    s = p.add_argument_group("server-sent events")
    s.add_argument("--heartbeat", type=float, default=_DEFAULTS.heartbeat_s, dest="heartbeat_s",
                   help="seconds of idle before a heartbeat comment")
    s.add_argument("--retry-ms", type=int, default=_DEFAULTS.retry_ms,
                   help="reconnection delay hint sent to clients")
    s.add_argument("--history-size", type=int, default=_DEFAULTS.history_size,
                   help="events kept per channel for Last-Event-ID resume")
    s.add_argument("--history-bytes", type=int, default=_DEFAULTS.history_bytes,
                   help="bytes of history kept per channel (an event costs twice its encoded size)")
    s.add_argument("--history-total-bytes", type=int, default=_DEFAULTS.history_total_bytes,
                   help="bytes of history across all channels; least recently used channels lose events first")
    s.add_argument("--max-event-bytes", type=int, default=_DEFAULTS.max_event_bytes,
                   help="largest event after encoding; a bigger publish gets 413")
    s.add_argument("--max-channels", type=int, default=_DEFAULTS.max_channels,
                   help="channels kept; past this the least recently used idle one is forgotten")
    s.add_argument("--max-channels-per-stream", type=int, default=_DEFAULTS.max_channels_per_stream,
                   help="channels one GET /events stream may name (400 beyond)")
    s.add_argument("--max-subscriber-buffer-bytes", type=int, default=_DEFAULTS.max_subscriber_buffer_bytes,
                   help="unsent bytes a slow subscriber may hold before it is disconnected")
    s.add_argument("--stream-send-buffer-bytes", type=int, default=_DEFAULTS.stream_send_buffer_bytes,
                   help="kernel send buffer of each stream (0: left to the kernel)")
    m = p.add_argument_group("chat model (/v1/chat/completions, /chat)")
    m.add_argument("--model-tokens-per-s", type=float, default=_DEFAULTS.model_tokens_per_s,
                   help="mock model pacing after the first token (0: all at once)")
    m.add_argument("--model-first-token-ms", type=float, default=_DEFAULTS.model_first_token_ms,
                   help="mock model latency before its first token")
    m.add_argument("--upstream", default=_DEFAULTS.upstream_url, dest="upstream_url", metavar="URL",
                   type=_upstream_url,
                   help="relay an OpenAI-compatible API at this base URL (e.g. https://host/v1) "
                        "instead of the mock model")
    m.add_argument("--upstream-key-env", default=_DEFAULTS.upstream_key_env, metavar="NAME",
                   help="environment variable holding the upstream API key (sent as a Bearer token)")
    return p


def _upstream_url(url: str) -> str:
    from .ai.upstream import Endpoint

    try:
        Endpoint.parse(url)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return url


def load_app(spec: str, config: Config | None = None) -> App:
    """Import ``module:attr``: an App, or a factory returning one, called with the
    Config when it takes an argument (``create_app(config)``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--app wants MODULE:ATTR, got {spec!r}")
    module = importlib.import_module(module_name)
    obj = getattr(module, attr)
    if not isinstance(obj, App) and callable(obj):
        takes_config = bool(inspect.signature(obj).parameters)
        obj = obj(config or Config()) if takes_config else obj()
    if not isinstance(obj, App):
        raise ValueError(f"{spec} is not an sse_server.App")
    return obj


def config_from_args(args: argparse.Namespace) -> Config:
    names = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in vars(args).items() if k in names})


async def serve(app: App, config: Config) -> None:
    server = Server(app, config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown()))
    # Everything allocated at start-up lives forever; keep the collector off it so
    # its pauses scale with per-request garbage, not with the heap.
    gc.collect()
    gc.freeze()
    log.info("serving on %s (Ctrl+C to stop)", server.url)
    await server.serve_forever()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
        if args.app:
            app = load_app(args.app, config)
        else:
            from .demo import create_app

            app = create_app(config)
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(app, config))
    except OSError as e:
        print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
