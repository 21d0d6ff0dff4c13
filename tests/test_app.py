"""The app seam: routing answers, error mapping and the middleware stack, over real sockets."""

from __future__ import annotations

import asyncio
import io
import logging
import zlib
from collections.abc import AsyncIterator

import pytest

from sse_server import App, HTTPError, JSONResponse, PlainTextResponse, Request, Response, Server
from sse_server.app import AnyResponse, Handler, Headers, Outcome, StreamingResponse
from sse_server.channels import MemoryEngine
from sse_server.sse import parse_events
from sse_server.sse.streams import ChannelStream, EventStream

from .conftest import StartServer
from .http_client import exchange
from .sse_client import SSEClient
from .waiting import eventually


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode()


def request(method: str, path: str) -> Request:
    return Request(method, path, path, "", "1.1", Headers([("host", "t")]))


class Deflate:
    """A stream filter that compresses each write and flushes it at once (what compression
    middleware does); close() ends the deflate stream."""

    def __init__(self) -> None:
        self.compressor = zlib.compressobj(wbits=-15)
        self.writes = 0

    def __call__(self, data: bytes) -> bytes:
        self.writes += 1
        return self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)

    def close(self) -> bytes:
        return self.compressor.flush(zlib.Z_FINISH)


def demo_app(engine: MemoryEngine) -> App:
    app = App()

    @app.route("/hello")
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello\n")

    @app.route("/teapot")
    async def teapot(request: Request) -> Response:
        raise HTTPError(418, "short and stout", [("X-Pot", "1")])

    @app.route("/boom")
    async def boom(request: Request) -> Response:
        raise RuntimeError("handler failed on purpose")

    @app.route("/ticks")
    async def ticks(request: Request) -> EventStream:
        async def produce() -> AsyncIterator[str]:
            for i in range(3):
                yield f"tick {i}"

        return EventStream(produce(), retry_ms=-1)

    @app.route("/news")
    async def news(request: Request) -> ChannelStream:
        return await ChannelStream.subscribe(request, engine, ["news"], retry_ms=-1)

    return app


# -- the app alone ---------------------------------------------------------------------


async def test_app_answers_404_405_and_http_errors_without_a_server() -> None:
    """App.handle maps no route to 404, a wrong method to 405 with Allow, HTTPError to its status."""
    app = demo_app(MemoryEngine())
    missing = await app.handle(request("GET", "/nope"))
    wrong = await app.handle(request("POST", "/hello"))
    teapot = await app.handle(request("GET", "/teapot"))
    assert isinstance(missing, Response) and missing.status == 404 and missing.body == b"no route for /nope\n"
    assert isinstance(wrong, Response) and wrong.status == 405 and ("Allow", "GET, HEAD") in wrong.headers
    assert isinstance(teapot, Response) and teapot.status == 418 and ("X-Pot", "1") in teapot.headers


async def test_handler_error_is_a_logged_500_that_closes(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in a handler is a 500 asking to close, logged once with its traceback."""
    response = await demo_app(MemoryEngine()).handle(request("GET", "/boom"))
    assert isinstance(response, Response) and response.status == 500
    assert ("Connection", "close") in response.headers
    (record,) = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.exc_info is not None and "/boom" in record.getMessage()


async def test_middleware_runs_first_added_outermost() -> None:
    """Middleware wraps in the order added: the first sees the request first and the response last."""
    seen: list[str] = []

    def tracer(name: str):  # type: ignore[no-untyped-def]
        async def middleware(request: Request, call_next: Handler) -> AnyResponse:
            seen.append(f"{name} in")
            response = await call_next(request)
            seen.append(f"{name} out")
            return response

        return middleware

    app = demo_app(MemoryEngine())
    app.add_middleware(tracer("a"))
    app.add_middleware(tracer("b"))
    await app.handle(request("GET", "/hello"))
    assert seen == ["a in", "b in", "b out", "a out"]


async def test_middleware_errors_are_mapped_like_handler_errors() -> None:
    """An HTTPError raised by middleware is its status; any other exception is a 500."""
    async def refuse(request: Request, call_next: Handler) -> AnyResponse:
        if request.path == "/hello":
            raise HTTPError(401, "no token", [("WWW-Authenticate", "Bearer")])
        raise ValueError("middleware bug")

    app = demo_app(MemoryEngine())
    app.add_middleware(refuse)
    refused = await app.handle(request("GET", "/hello"))
    broken = await app.handle(request("GET", "/ticks"))
    assert isinstance(refused, Response) and refused.status == 401
    assert ("WWW-Authenticate", "Bearer") in refused.headers
    assert isinstance(broken, Response) and broken.status == 500


# -- over sockets ------------------------------------------------------------------------


async def test_middleware_answers_a_preflight_for_any_path_before_routing(start_server: StartServer) -> None:
    """OPTIONS to a route that has no OPTIONS handler, or to no route at all, is answered by middleware."""
    async def preflight(request: Request, call_next: Handler) -> AnyResponse:
        if request.method == "OPTIONS":
            return Response(b"", 204, [("Access-Control-Allow-Methods", "GET, POST")])
        return await call_next(request)

    app = demo_app(MemoryEngine())
    app.add_middleware(preflight)
    server = await start_server(app)
    for path in ("/hello", "/does-not-exist"):
        reply = await exchange("127.0.0.1", server.port, get(path, "OPTIONS"))
        assert reply.status == 204 and reply.header("access-control-allow-methods") == "GET, POST", path
    assert (await exchange("127.0.0.1", server.port, get("/hello"))).body == b"hello\n"


async def test_middleware_headers_reach_every_response_streams_included(start_server: StartServer) -> None:
    """A header added by middleware is on plain responses, 404s, 500s and both kinds of stream."""
    async def stamp(request: Request, call_next: Handler) -> AnyResponse:
        response = await call_next(request)
        response.headers.append(("X-Stamp", "yes"))
        return response

    engine = MemoryEngine()
    app = demo_app(engine)
    app.add_middleware(stamp)
    server = await start_server(app)
    for path in ("/hello", "/nope", "/boom", "/ticks"):
        reply = await exchange("127.0.0.1", server.port, get(path))
        assert reply.header("x-stamp") == "yes", path
    client = await SSEClient.connect(server.port, "/news")
    assert client.reply.header("x-stamp") == "yes"
    await client.close()


async def test_on_finish_reports_status_bytes_and_duration(start_server: StartServer) -> None:
    """Each response's outcome reaches on_finish once it has ended: plain, error and stream alike."""
    outcomes: dict[str, Outcome] = {}

    async def observe(request: Request, call_next: Handler) -> AnyResponse:
        request.on_finish(lambda outcome: outcomes.__setitem__(request.path, outcome))
        return await call_next(request)

    engine = MemoryEngine()
    app = demo_app(engine)
    app.add_middleware(observe)
    server = await start_server(app)
    for path in ("/hello", "/nope", "/boom"):
        await exchange("127.0.0.1", server.port, get(path))
    ticks = await exchange("127.0.0.1", server.port, get("/ticks"))
    await eventually(lambda: "/ticks" in outcomes)
    assert (outcomes["/hello"].status, outcomes["/hello"].body_bytes) == (200, len(b"hello\n"))
    assert outcomes["/nope"].status == 404 and outcomes["/boom"].status == 500
    stream = outcomes["/ticks"]
    assert stream.streamed and stream.completed and stream.status == 200
    wire = sum(len(f"{len(c):x}\r\n") + len(c) + 2 for c in ticks.chunks or []) + len(b"0\r\n\r\n")
    assert stream.body_bytes == wire  # every byte of the chunked body, the last chunk too
    assert all(o.duration_s >= 0 for o in outcomes.values())

    client = await SSEClient.connect(server.port, "/news")  # a detached stream: reported when the client leaves
    await eventually(lambda: engine.subscriber_count("news") == 1)
    published = await engine.publish("news", "one")
    await client.take(1)
    assert "/news" not in outcomes
    await client.close()
    await eventually(lambda: "/news" in outcomes)
    news = outcomes["/news"]
    event = f"id: {published.id}\ndata: one\n\n".encode()
    assert news.streamed and not news.completed  # the client left; the stream did not end by itself
    assert news.body_bytes == len(f"{len(event):x}\r\n") + len(event) + 2


async def test_a_stream_filter_wraps_every_write_of_both_stream_kinds(start_server: StartServer) -> None:
    """Middleware can pass a stream through a filter: each write is transformed and flushed at once,
    channel deliveries included, and the filter's close() ends the body."""
    filters: list[Deflate] = []

    async def compress(request: Request, call_next: Handler) -> AnyResponse:
        response = await call_next(request)
        if isinstance(response, StreamingResponse):
            deflate = Deflate()
            filters.append(deflate)
            response.add_filter(deflate)
            response.headers.append(("X-Encoding", "deflate"))
        return response

    engine = MemoryEngine()
    app = demo_app(engine)
    app.add_middleware(compress)
    server = await start_server(app)
    ticks = await exchange("127.0.0.1", server.port, get("/ticks"))
    assert ticks.header("x-encoding") == "deflate"
    decompressor = zlib.decompressobj(wbits=-15)
    plain = decompressor.decompress(ticks.body)
    assert decompressor.eof  # close() finished the deflate stream before the last chunk
    assert [e.data for e in parse_events(plain)] == ["tick 0", "tick 1", "tick 2"]
    assert len(ticks.chunks or []) == 4  # one compressed chunk per event, flushed at once, plus the tail

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get("/news"))
    await reader.readuntil(b"\r\n\r\n")
    await eventually(lambda: engine.subscriber_count("news") == 1)
    live = zlib.decompressobj(wbits=-15)
    await engine.publish("news", "hello")
    size_line = await reader.readuntil(b"\r\n")
    chunk = await reader.readexactly(int(size_line, 16) + 2)
    assert parse_events(live.decompress(chunk[:-2]))[0].data == "hello"  # arrives whole, not held back
    writer.close()


async def test_server_middleware_wraps_without_changing_the_app(start_server: StartServer,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The access log is the server's own middleware: an App served twice is not modified by either."""
    app = demo_app(MemoryEngine())
    quiet = await start_server(app, access_log=False)
    with caplog.at_level(logging.INFO, logger="sse_server.access"):
        logged = await start_server(app, access_log=True)
    assert quiet.access_log is None and logged.access_log is not None
    logged.access_log.stream = written = io.StringIO()
    await exchange("127.0.0.1", quiet.port, get("/hello"))
    await exchange("127.0.0.1", logged.port, get("/hello"))
    logged.access_log.flush()
    lines = written.getvalue().splitlines()
    assert len(lines) == 1 and '"GET /hello HTTP/1.1" 200 6B' in lines[0]
    assert app._middleware == []
    assert isinstance(quiet, Server) and isinstance(logged, Server)


async def test_text_with_a_lone_surrogate_is_sent_not_a_500() -> None:
    """A response text holding a lone surrogate (echoed client input) is encoded with '?' in its place."""
    assert Response("model \ud800 unknown\n").body == b"model ? unknown\n"
    assert JSONResponse({"model": "\udfff"}).body == b'{"model":"?"}'
