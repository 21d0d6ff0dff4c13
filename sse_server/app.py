"""The application surface: App, Request and the Response types.

An app is a routing table of ``async def handler(request) -> Response`` wrapped in
a middleware stack. The connection layer (connection.py) builds the Request, awaits
``app.handle(request)`` and writes what comes back; nothing here touches a socket.
The app decides every answer: 404 and 405, ``HTTPError``, a malformed body, 500.

    app = App()

    @app.route("/hello/{name}")
    async def hello(request: Request) -> Response:
        return PlainTextResponse(f"hello {request.path_params['name']}\\n")

A middleware is ``async def mw(request, call_next) -> Response``. It can answer
before routing (a preflight, a refusal), change the response's headers (streams
included: their head goes out after the stack returns), learn each response's final
status, bytes and duration with ``request.on_finish(callback)``, and wrap a stream's
writes with ``response.add_filter(filter)``:

    async def timing(request, call_next):
        response = await call_next(request)
        response.headers.append(("X-Served-By", "app"))
        return response

    app.add_middleware(timing)
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import parse_qs

from .http11 import REASONS, ProtocolError
from .routing import MethodNotAllowed, NotFound, Router
from .untrusted import BadJSON, load_json

if TYPE_CHECKING:
    from .auth import Principal
    from .channels import EncodedEvent
    from .config import Config

log = logging.getLogger("sse_server")

__all__ = [
    "App",
    "Handler",
    "Headers",
    "header_value",
    "HTMLResponse",
    "HTTPError",
    "JSONResponse",
    "Middleware",
    "Outcome",
    "PlainTextResponse",
    "Request",
    "Response",
    "Sink",
    "StreamFilter",
    "StreamingResponse",
]


class Headers:
    """Request headers: names lower-cased, repeats kept in order.

    >>> h = Headers([("host", "a"), ("accept", "x"), ("accept", "y")])
    >>> h.get("Accept"), h.get_all("accept")
    ('x', ['x', 'y'])
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items  # (lower-cased name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self._items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class HTTPError(Exception):
    """Raise from a handler to answer with a status and a short plain-text reason."""

    def __init__(self, status: int, detail: str = "", headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(detail or str(status))
        self.status = status
        self.detail = detail
        self.headers = list(headers)


class BodyReader(Protocol):
    async def __call__(self) -> bytes: ...


class Outcome(NamedTuple):
    """How a response ended, for ``request.on_finish`` callbacks (logs, metrics).

    A NamedTuple, not a frozen dataclass: one is made per request, and a frozen
    dataclass's ``__init__`` costs three times as much.
    """

    status: int
    body_bytes: int  # bytes of body that went to the socket (after filters and framing)
    duration_s: float  # from the request head to the last byte (or to the end of the stream)
    streamed: bool
    completed: bool  # False: the client left or the stream failed before its end
    events: int = 0  # events a stream sent (SSE streams count theirs; heartbeats excluded)
    # What a log line needs of its request, so a callback need not hold the request
    # (an idle subscriber keeps only its Exchange): method, target, version, client.
    method: str = ""
    target: str = ""
    http_version: str = ""
    client: tuple[str, int] | None = None


FinishCallbacks = Callable[[Outcome], None] | list[Callable[[Outcome], None]] | None


class Request:
    """One HTTP request as the handler sees it. The body is read on first use.

    ``client`` is (address, port) of the client, after trusted proxies (port 0 when a
    proxy named only the address); ``scheme`` is "https" or "http" as the client used
    it; ``client_trusted`` says the client is itself one of ``--forwarded-allow-ips``
    (a proxy, or this host), which per-client limits leave alone.
    """

    __slots__ = (
        "method", "target", "path", "query_string", "http_version", "headers",
        "client", "path_params", "app", "scheme", "client_trusted", "principal",
        "_read_body", "_body", "_query", "_on_finish",
    )

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query_string: str,
        http_version: str,
        headers: Headers,
        client: tuple[str, int] | None = None,
        read_body: BodyReader | None = None,
        app: App | None = None,
        scheme: str = "http",
        client_trusted: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query_string = query_string
        self.http_version = http_version
        self.headers = headers
        self.client = client
        self.path_params: dict[str, str] = {}
        self.app = app
        self.scheme = scheme
        self.client_trusted = client_trusted
        # Who the client is, set by the auth middleware (middleware/auth.py) when there is one.
        self.principal: Principal | None = None
        self._read_body = read_body
        self._body: bytes | None = None
        self._query: dict[str, list[str]] | None = None
        self._on_finish: FinishCallbacks = None

    @property
    def query(self) -> dict[str, list[str]]:
        """Every value of every query parameter: ``?a=1&a=2`` -> ``{"a": ["1", "2"]}``."""
        if self._query is None:
            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    def query_param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    async def body(self) -> bytes:
        if self._body is None:
            self._body = await self._read_body() if self._read_body is not None else b""
        return self._body

    async def text(self) -> str:
        try:
            return (await self.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "request body is not UTF-8") from None

    async def json(self) -> Any:
        """The body's JSON value; 400 for anything ``untrusted.load_json`` refuses
        (not UTF-8, not JSON, nested too deeply, a lone surrogate, NaN or 1e999)."""
        try:
            return load_json(await self.body())
        except BadJSON as e:
            raise HTTPError(400, f"request body is not JSON we accept: {e}") from None

    def on_finish(self, callback: Callable[[Outcome], None]) -> None:
        """Call ``callback(outcome)`` once the response has ended, streams included."""
        # One callback is kept as itself, more in a list: an idle subscriber that the
        # metrics want to hear about when it ends holds no list for it.
        current = self._on_finish
        if current is None:
            self._on_finish = callback
        elif isinstance(current, list):
            current.append(callback)
        else:
            self._on_finish = [current, callback]

    def take_finish_callbacks(self) -> FinishCallbacks:
        """Hand the ``on_finish`` callbacks to whoever outlives this request (a detached
        stream keeps only them, not the request with its headers)."""
        callbacks, self._on_finish = self._on_finish, None
        return callbacks


def run_finish_callbacks(callbacks: FinishCallbacks, outcome: Outcome) -> None:
    if callbacks is None:
        return
    for callback in callbacks if isinstance(callbacks, list) else (callbacks,):
        try:
            callback(outcome)
        except Exception:
            log.exception("an on_finish callback failed")


class Sink(Protocol):
    """Where a streaming response writes; the connection layer provides the real one.

    ``write`` frames (chunked on HTTP/1.1) and queues without blocking; ``deliver``
    writes an event encoded once for many streams, framing it once for all of them,
    and says how far behind the client is;
    ``drain`` waits while the client is slow and raises ``ConnectionError`` once it
    is gone. ``detach(on_close)`` keeps the stream open after ``stream()`` returns,
    for producers that push from elsewhere; ``finish()`` ends such a stream cleanly.
    """

    @property
    def config(self) -> Config: ...

    def write(self, data: bytes) -> None: ...
    def deliver(self, event: EncodedEvent) -> int:
        """Write ``event``; return the bytes still unsent after it, or -1 if the
        connection is closing and nothing was written (one call on the fan-out path)."""
        ...

    def buffered_bytes(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...
    async def drain(self) -> None: ...
    def detach(self, on_close: Callable[[], None]) -> None: ...
    def finish(self) -> None: ...


class StreamFilter(Protocol):
    """Transforms a stream's bytes on their way out (compression, for one).

    Called once per write with what the producer wrote, it returns the bytes to send
    now (b"" to send nothing yet); a filter that holds bytes back delays the stream,
    so a compressor flushes on every call. ``close()`` gives the final bytes of a
    stream that ends cleanly.
    """

    def __call__(self, data: bytes) -> bytes: ...
    def close(self) -> bytes: ...


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name`` (lower-case) in a header list of any case: responses,
    upstream replies. Requests have ``Headers.get``, whose names are already lower-case."""
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _with_content_type(
    headers: Iterable[tuple[str, str]] | dict[str, str] | None, content_type: str
) -> list[tuple[str, str]]:
    items = list(headers.items() if isinstance(headers, dict) else headers or ())
    if header_value(items, "content-type") is None:
        items.append(("Content-Type", content_type))
    return items


class Response:
    """A complete response, sent with ``Content-Length``."""

    __slots__ = ("status", "headers", "body")
    media_type = "text/plain; charset=utf-8"

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        # "replace": a lone surrogate (valid in a Python str, never in UTF-8) that came
        # from a client and is echoed back becomes "?" instead of a 500.
        self.body = body.encode("utf-8", "replace") if isinstance(body, str) else body
        self.headers = _with_content_type(headers, content_type or self.media_type)


class PlainTextResponse(Response):
    __slots__ = ()


class HTMLResponse(Response):
    __slots__ = ()
    media_type = "text/html; charset=utf-8"


class JSONResponse(Response):
    __slots__ = ()
    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status: int = 200,
        headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        super().__init__(body, status, headers)


class StreamingResponse:
    """A response whose body is produced while it is sent.

    Give it an async iterable of ``bytes``/``str`` (each item is flushed as its own
    chunk), or subclass it and override ``stream(sink)``. The connection runs
    ``stream`` as a task and cancels it the moment the client goes away.
    """

    __slots__ = ("status", "body", "headers", "filters", "compress", "events")
    media_type = "text/plain; charset=utf-8"
    kind = "iterator"  # what metrics call this stream: iterator, channel, html
    # Whether this stream tells its client in-band when the server cuts it (shutdown,
    # a producer error): a channel stream's last jittered ``retry:``, a generation's
    # error event. Such a stream ends with a clean last chunk. Any other stream is
    # aborted instead, so the client sees a truncated body, not a complete one.
    cut_in_band = False

    def __init__(
        self,
        body: AsyncIterable[bytes | str] | None = None,
        status: int = 200,
        headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = _with_content_type(headers, content_type or self.media_type)
        self.filters: tuple[StreamFilter, ...] = ()  # a tuple: most streams have none, and hold no list
        # gzip this stream when the client accepts it: None leaves it to the server
        # (on for HTML streams; SSE only with --compress-sse), True or False decides.
        self.compress: bool | None = None
        self.events = 0  # events written, for the access log

    def add_filter(self, stream_filter: StreamFilter) -> None:
        """Pass every write of this stream through ``stream_filter``, last added outermost."""
        self.filters = (*self.filters, stream_filter)

    async def stream(self, sink: Sink) -> None:
        if self.body is None:
            return
        async for chunk in self.body:
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            if chunk:
                sink.write(chunk)
                await sink.drain()

    async def on_shutdown(self, sink: Sink) -> None:
        """Called when the server stops while this stream is live; the default does nothing."""


AnyResponse = Response | StreamingResponse
Handler = Callable[[Request], Awaitable[AnyResponse]]
Middleware = Callable[[Request, Handler], Awaitable[AnyResponse]]


def error_response(status: int, detail: str = "", headers: Iterable[tuple[str, str]] = ()) -> Response:
    """The plain-text answer for an error status: its detail, or the status's reason phrase."""
    return Response(f"{detail or REASONS.get(status, '')}\n", status, list(headers))


class App:
    """A routing table, a middleware stack, and start-up and shutdown hooks.

    ``handle(request)`` is the whole app as the server sees it. Middleware added
    with ``add_middleware`` runs in the order added, the first outermost.
    """

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.router = Router()
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.state: dict[str, Any] = {}
        self._middleware: list[Middleware] = list(middleware)
        self._stack: Handler | None = None

    def route(self, pattern: str, methods: Iterable[str] = ("GET",)) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.router.add(pattern, handler, methods)
            return handler

        return register

    def add_route(self, pattern: str, handler: Handler, methods: Iterable[str] = ("GET",)) -> None:
        self.router.add(pattern, handler, methods)

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every request from now on; the first added is the outermost."""
        self._middleware.append(middleware)
        self._stack = None

    def handler(self, outer: Sequence[Middleware] = ()) -> Handler:
        """The stack as one callable, with ``outer`` (the server's own) around the app's."""
        stack: Handler = self._endpoint
        for middleware in reversed([*outer, *self._middleware]):
            stack = _bind(middleware, stack)
        return _guarded(stack)

    async def handle(self, request: Request) -> AnyResponse:
        if self._stack is None:
            self._stack = self.handler()
        return await self._stack(request)

    async def _endpoint(self, request: Request) -> AnyResponse:
        try:
            match = self.router.match(request.method, request.path)
        except NotFound:
            return error_response(404, f"no route for {request.path}")
        except MethodNotAllowed as e:
            return error_response(405, f"{request.method} not allowed here", [("Allow", ", ".join(e.allow))])
        request.path_params = match.params
        return await _answer(match.handler, request)


def _bind(middleware: Middleware, call_next: Handler) -> Handler:
    # A plain function handing back the middleware's coroutine: a layer costs one
    # coroutine per request, not two. What a middleware raises is answered by the
    # guard around the whole stack (and a handler's by the endpoint's own guard).
    def call(request: Request) -> Awaitable[AnyResponse]:
        return middleware(request, call_next)

    return call


def _guarded(stack: Handler) -> Handler:
    async def call(request: Request) -> AnyResponse:
        try:  # _answer inlined: this runs on every request
            return await stack(request)
        except ConnectionError:
            raise  # the client left: there is nobody to answer
        except Exception as e:
            return _error_for(e, request)

    return call


async def _answer(handler: Handler, request: Request) -> AnyResponse:
    """Await ``handler`` and turn what it raises into the response it stands for."""
    try:
        return await handler(request)
    except ConnectionError:
        raise  # the client left: there is nobody to answer
    except Exception as e:
        return _error_for(e, request)


def _error_for(error: Exception, request: Request) -> Response:
    if isinstance(error, HTTPError):
        return error_response(error.status, error.detail, error.headers)
    if isinstance(error, ProtocolError):
        # The request body broke its framing: answer, then the connection closes.
        return error_response(error.status, str(error), [("Connection", "close")])
    log.exception("handler for %s %s failed", request.method, request.path, exc_info=error)
    return error_response(500, "internal server error", [("Connection", "close")])
