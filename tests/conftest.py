"""Fixtures: a real Server on 127.0.0.1:0 inside the test's event loop, and its test app."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sse_server import App, Config, PlainTextResponse, Request, Response, Server, StreamingResponse

from .redis_server import RedisServer, require_redis

# Short enough that the timeout tests finish quickly, long enough that a busy CI
# machine does not trip them during ordinary requests.
FAST_CONFIG: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "head_timeout_s": 5.0,
    "keepalive_timeout_s": 5.0,
    "body_timeout_s": 5.0,
    "shutdown_timeout_s": 3.0,
}


def make_app() -> App:
    """The app the socket tests talk to; its events let tests see inside handlers."""
    app = App()
    state = app.state
    for name in ("slow_entered", "slow_release", "slow_cancelled", "stream_started", "producer_cancelled",
                 "producer_finally"):
        state[name] = asyncio.Event()

    @app.route("/healthz")
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    @app.route("/echo", methods=["POST", "PUT"])
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, headers=[("X-Method", request.method)], content_type="application/octet-stream")

    @app.route("/ignore", methods=["POST"])
    async def ignore(request: Request) -> Response:
        return PlainTextResponse("ignored\n")

    @app.route("/items/{item_id}", methods=["GET", "DELETE"])
    async def item(request: Request) -> Response:
        return PlainTextResponse(f"{request.method} {request.path_params['item_id']}\n")

    @app.route("/slow")
    async def slow(request: Request) -> Response:
        state["slow_entered"].set()
        try:
            await state["slow_release"].wait()
        except asyncio.CancelledError:
            state["slow_cancelled"].set()
            raise
        return PlainTextResponse("slow done\n")

    @app.route("/boom")
    async def boom(request: Request) -> Response:
        raise RuntimeError("handler failed on purpose")

    @app.route("/stream")
    async def stream(request: Request) -> StreamingResponse:
        n = int(request.query_param("n", "3") or 3)

        async def body() -> AsyncIterator[bytes]:
            for i in range(n):
                yield f"part {i}\n".encode()

        return StreamingResponse(body())

    @app.route("/forever")
    async def forever(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"first\n"
                state["stream_started"].set()
                await asyncio.Event().wait()  # until cancelled
                yield b"never\n"
            except asyncio.CancelledError:
                state["producer_cancelled"].set()
                raise
            finally:
                state["producer_finally"].set()

        return StreamingResponse(body())

    return app


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """A factory: ``await start_server(app=None, **config)`` binds a server; all are shut down after.

    ``app`` is an App or a factory taking the Config (``create_app``).
    """
    servers: list[Server] = []

    async def start(app: App | Callable[[Config], App] | None = None, **overrides: Any) -> Server:
        config = Config(**{**FAST_CONFIG, **overrides})
        if app is None:
            app = make_app()
        elif not isinstance(app, App):
            app = app(config)
        server = Server(app, config)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        async with asyncio.timeout(15):
            await server.shutdown()


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server on a free port, stopped after the test (skips without one).

    Request it before ``start_server`` so that servers using it stop first."""
    require_redis()
    async with RedisServer(tmp_path) as redis:
        yield redis


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    """A server with the test app and FAST_CONFIG."""
    return await start_server()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: they are the slowest, and their synchronous driver
    runs an event loop of its own that other tests must not share."""
    items.sort(key=lambda item: "/tests/browser/" in str(item.fspath))


@dataclass(frozen=True)
class TLSFiles:
    """A test CA made at test time and a server certificate it signed, as PEM files."""

    ca_pem: str
    certfile: str
    keyfile: str

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA."""
        return ssl.create_default_context(cafile=self.ca_pem)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A certificate for 127.0.0.1 and localhost, signed by a CA that exists for this run only."""
    import trustme

    folder: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))
    ca.cert_pem.write_to_path(files.ca_pem)
    cert.private_key_pem.write_to_path(files.keyfile)
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(files.certfile, append=i > 0)
    return files
