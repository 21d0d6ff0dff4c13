"""Server: bind, accept, keep the registry of live connections, shut down gracefully.

    server = Server(app, Config(port=0))
    await server.start()          # returns once bound; server.port is the real port
    ...
    await server.shutdown()       # bounded by config.shutdown_timeout_s

One sweeper timer serves every connection's deadline (head, keep-alive idle,
body); thousands of idle connections cost memory, not timer wake-ups.

With ``certfile`` the port speaks HTTPS (``tls_context``); each connection is
upgraded by its Connection after admission. The server keeps the per-client
tables the accept path consults (``admit``): open connections per client and a
token bucket of new connections per client.

The server wraps the app's middleware stack in its own without changing the app
(one App can be served by several servers with different configs); outermost
first: compression, metrics (which answers ``GET /metrics``). The access log and
the metrics' counts are not layers: they are ``finish_hooks``, which each
response's Exchange calls with its Outcome when it ends, so they cost no
coroutine and no registration per request.
The first server to serve an app puts its ``Metrics`` in ``app.state["metrics"]``
for pages that show them (the demo's ``/status``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable

from .app import AnyResponse, App, Middleware, Outcome, Request
from .clients import TokenBuckets, TrustedPeers, retry_after
from .config import Config
from .connection import Connection, Exchange
from .limits import EmfileLog, connection_cap, raise_nofile_limit
from .middleware.access_log import AccessLog
from .middleware.compression import Compression
from .middleware.metrics import Metrics

__all__ = ["Server", "metrics_token", "tls_context"]

log = logging.getLogger("sse_server")

# Retry-After for a client at its open-connection cap: nobody knows when one of its
# connections ends, so it is told to come back in a while rather than at once.
_RETRY_AT_CONNECTION_CAP_S = 5


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server context for HTTPS: TLS 1.2 or later, ALPN ``http/1.1``, the system's ciphers.

    Raises OSError (ssl.SSLError included) when the files cannot be read or do not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: 1.0 and 1.1 are deprecated
    context.set_alpn_protocols(["http/1.1"])  # we speak nothing else; a client wanting h2 falls back
    context.load_cert_chain(certfile, keyfile)
    return context


def metrics_token(config: Config) -> str | None:
    """The bearer token /metrics wants, from the variable ``--metrics-token-env`` names.

    Raises ValueError when that variable is unset or empty: a server told to protect
    its metrics does not start with them open.
    """
    name = config.metrics_token_env
    if not name:
        return None
    token = os.environ.get(name, "")
    if not token:
        raise ValueError(f"--metrics-token-env: the environment variable {name} is not set or empty")
    return token


class Server:
    def __init__(self, app: App, config: Config | None = None) -> None:
        self.app = app
        self.config = config or Config()
        self.connections: set[Connection] = set()
        self.streams: set[Exchange] = set()
        self.shutting_down = False
        self.port = 0
        self.host = self.config.host
        self._awaiting: set[Connection] = set()  # connections with a deadline
        self._listener: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()  # set while no connection is open
        self._stopped = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.write_timeouts = 0  # clients dropped for taking no bytes in time
        cfg = self.config
        outer: list[Middleware] = []
        hooks: list[Callable[[Outcome], None]] = []
        self.access_log: AccessLog | None = None
        if cfg.access_log and logging.getLogger("sse_server.access").isEnabledFor(logging.INFO):
            self.access_log = AccessLog(cfg.access_log_format)
            hooks.append(self.access_log.record)
        if cfg.compression:
            outer.append(Compression(cfg))
        self.metrics: Metrics | None = None
        if cfg.metrics:
            self.metrics = Metrics(self, metrics_token(cfg))
            outer.append(self.metrics)
            hooks.append(self.metrics.observe)
            app.state.setdefault("metrics", self.metrics)
        self._handle = app.handler(outer=outer)
        self.finish_hooks = tuple(hooks)  # each response's Outcome, when it ends (connection.Exchange)
        self.max_connections = self.config.max_connections  # lowered at start to fit the descriptor limit
        self._emfile_log: EmfileLog | None = None
        self.tls: ssl.SSLContext | None = None  # built at start from config.certfile
        self.trusted = TrustedPeers(self.config.forwarded_allow_ips)
        self._open_by_client: dict[str, int] = {}
        rate = self.config.connect_rate
        self._connects = TokenBuckets(rate, self.config.connect_burst) if rate > 0 else None

    async def handle(self, request: Request) -> AnyResponse:
        """The app's answer to one request, through the server's and the app's middleware."""
        return await self._handle(request)

    @property
    def sweep_interval_s(self) -> float:
        cfg = self.config
        shortest = min(cfg.head_timeout_s, cfg.keepalive_timeout_s, cfg.body_timeout_s, cfg.write_timeout_s)
        return max(0.02, min(1.0, shortest / 4))

    async def start(self, sock: socket.socket | None = None) -> None:
        """Run the app's start-up hooks and bind; returns once the port is listening.

        ``sock``: serve on this listening socket instead of binding ``config.host``
        and ``config.port`` (a worker of ``--workers`` serves the supervisor's).
        """
        self.loop = asyncio.get_running_loop()
        if self.config.certfile:
            self.tls = tls_context(self.config.certfile, self.config.keyfile)
        nofile = raise_nofile_limit()
        self.max_connections = connection_cap(self.config.max_connections, nofile)
        if self.max_connections < self.config.max_connections:
            log.warning("serving at most %d connections, not %d: the process may open %d file descriptors "
                        "and keeps some in reserve", self.max_connections, self.config.max_connections, nofile)
        # The event loop accepts up to ``backlog`` connections per wake-up before any of
        # them can be told 503: with few descriptors to spare, a burst would run out of
        # them mid-loop. Accept no more at once than the descriptors left over.
        backlog = self.config.backlog
        if nofile is not None and nofile - self.max_connections < backlog:
            backlog = max(8, (nofile - self.max_connections) // 2)
            log.warning("accepting at most %d connections at a time (listen backlog %d): few file "
                        "descriptors are left over the connection cap", backlog, backlog)
        self._emfile_log = EmfileLog(self.loop.get_exception_handler())
        self.loop.set_exception_handler(self._emfile_log)
        for hook in self.app.on_startup:
            await hook()
        self._idle.set()
        if sock is not None:
            self._listener = await self.loop.create_server(lambda: Connection(self), sock=sock, backlog=backlog)
        else:
            self._listener = await self.loop.create_server(
                lambda: Connection(self), self.config.host, self.config.port,
                backlog=backlog, reuse_address=True,
            )
        sockname = self._listener.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._sweeper = self.loop.call_later(self.sweep_interval_s, self._sweep)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls is not None else 'http'}://{host}:{self.port}"

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    # -- the registry, called by Connection ---------------------------------------

    def admit(self, conn: Connection, key: str, new: bool) -> str | None:
        """Count ``conn`` against client ``key``, or return the Retry-After to refuse it with.

        ``new``: a new connection, which also spends a token of the client's connect rate.
        """
        cap = self.config.max_connections_per_client
        if cap and self._open_by_client.get(key, 0) >= cap:
            return str(_RETRY_AT_CONNECTION_CAP_S)
        if new and self._connects is not None:
            wait = self._connects.take(key, self.loop.time())
            if wait:
                return retry_after(wait)
        self._release(conn)
        if cap:
            self._open_by_client[key] = self._open_by_client.get(key, 0) + 1
        conn.limit_key = key
        return None

    def _release(self, conn: Connection) -> None:
        key = conn.limit_key
        if key is None:
            return
        conn.limit_key = None
        left = self._open_by_client.get(key, 0) - 1
        if left > 0:
            self._open_by_client[key] = left
        else:
            self._open_by_client.pop(key, None)

    def open_connections_of(self, key: str) -> int:
        """Connections counted against client ``key`` now."""
        return self._open_by_client.get(key, 0)

    def track(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._idle.clear()

    def await_deadline(self, conn: Connection) -> None:
        self._awaiting.add(conn)

    def clear_deadline(self, conn: Connection) -> None:
        self._awaiting.discard(conn)

    def stream_started(self, exchange: Exchange) -> None:
        self.streams.add(exchange)

    def stream_ended(self, exchange: Exchange) -> None:
        self.streams.discard(exchange)

    def untrack(self, conn: Connection) -> None:
        self._release(conn)
        self.connections.discard(conn)
        self._awaiting.discard(conn)
        if conn.stream is not None:
            self.streams.discard(conn.stream)
        if not self.connections:
            self._idle.set()

    def _sweep(self) -> None:
        now = self.loop.time()
        expired = [c for c in self._awaiting if 0.0 < c.deadline <= now]
        for conn in expired:
            self._awaiting.discard(conn)
            conn.on_deadline()
        if not self._stopped.is_set():
            self._sweeper = self.loop.call_later(self.sweep_interval_s, self._sweep)

    # -- shutdown -------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop accepting, end streams, let plain responses finish, then close the rest.

        Safe to call more than once; every caller waits for the same shutdown.
        """
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        self.shutting_down = True
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        for exchange in list(self.streams):
            response = exchange.response
            if response is not None:
                try:
                    await response.on_shutdown(exchange)
                except Exception:
                    log.exception("stream shutdown hook failed")
            exchange.end_stream()
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.shutdown_timeout_s)
        except TimeoutError:
            log.warning("%d connections still open after %.1fs; closing them",
                        len(self.connections), self.config.shutdown_timeout_s)
            for conn in list(self.connections):
                conn.abort()
                if conn.task is not None:
                    conn.task.cancel()
            try:
                await asyncio.wait_for(self._idle.wait(), 1.0)
            except TimeoutError:
                log.error("%d connections did not close", len(self.connections))
        for hook in self.app.on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        if self.access_log is not None:
            self.access_log.flush()
        if self._sweeper is not None:
            self._sweeper.cancel()
        emfile_log = self._emfile_log
        if emfile_log is not None:
            previous = emfile_log.previous
            if self.loop.get_exception_handler() is emfile_log:  # nobody replaced it since
                self.loop.set_exception_handler(previous)
        self._stopped.set()
        if self._listener is not None:
            await self._listener.wait_closed()
