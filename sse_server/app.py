"""The application surface: App, Request and the Response types.

An app is a routing table of ``async def handler(request) -> Response``.
The connection layer (connection.py) builds the Request, calls the handler and
writes the Response; nothing here touches a socket.

    app = App()

    @app.route("/hello/{name}")
    async def hello(request: Request) -> Response:
        return PlainTextResponse(f"hello {request.path_params['name']}\\n")
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from .routing import Router

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "App",
    "Handler",
    "Headers",
    "HTMLResponse",
    "HTTPError",
    "JSONResponse",
    "PlainTextResponse",
    "Request",
    "Response",
    "Sink",
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


class Request:
    """One HTTP request as the handler sees it. The body is read on first use."""

    __slots__ = (
        "method", "target", "path", "query_string", "http_version", "headers",
        "client", "path_params", "app", "keep_alive", "_read_body", "_body", "_query",
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
        self.keep_alive = True
        self._read_body = read_body
        self._body: bytes | None = None
        self._query: dict[str, list[str]] | None = None

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
        try:
            return json.loads(await self.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HTTPError(400, f"request body is not JSON: {e}") from None


class Sink(Protocol):
    """Where a streaming response writes; connection.py provides the real one.

    ``write`` frames (chunked on HTTP/1.1) and queues without blocking; ``drain``
    waits while the client is slow and raises ``ConnectionError`` once it is gone.
    ``frame`` gives the wire bytes for data, so one encoding can be written to many
    sinks of the same framing with ``write_framed``. ``detach(on_close)`` keeps the
    stream open after ``stream()`` returns, for producers that push from elsewhere;
    ``finish()`` ends such a stream cleanly.
    """

    chunked: bool

    @property
    def config(self) -> Config: ...

    def write(self, data: bytes) -> None: ...
    def frame(self, data: bytes) -> bytes: ...
    def write_framed(self, wire: bytes) -> None: ...
    def buffered_bytes(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...
    async def drain(self) -> None: ...
    def detach(self, on_close: Callable[[], None]) -> None: ...
    def finish(self) -> None: ...


def _with_content_type(
    headers: Iterable[tuple[str, str]] | dict[str, str] | None, content_type: str
) -> list[tuple[str, str]]:
    items = list(headers.items() if isinstance(headers, dict) else headers or ())
    if not any(k.lower() == "content-type" for k, _ in items):
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
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.headers = _with_content_type(headers, content_type or self.media_type)


class PlainTextResponse(Response):
    __slots__ = ()


class HTMLResponse(Response):
    __slots__ = ()
    media_type = "text/html; charset=utf-8"


class JSONResponse(Response):
    __slots__ = ()
    media_type = "application/json"

    def __init__(self, content: Any, status: int = 200, headers: Any = None) -> None:
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        super().__init__(body, status, headers)


class StreamingResponse:
    """A response whose body is produced while it is sent.

    Give it an async iterable of ``bytes``/``str`` (each item is flushed as its own
    chunk), or subclass it and override ``stream(sink)``. The connection runs
    ``stream`` as a task and cancels it the moment the client goes away.
    """

    __slots__ = ("status", "body", "headers")
    media_type = "text/plain; charset=utf-8"

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


Handler = Callable[[Request], Awaitable["Response | StreamingResponse"]]


class App:
    """A routing table plus start-up and shutdown hooks.

    ``config`` and ``server`` are set by the Server before ``on_startup`` runs.
    """

    def __init__(self) -> None:
        self.router = Router()
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.config: Config | None = None
        self.server: Any = None
        self.state: dict[str, Any] = {}

    def route(self, pattern: str, methods: Iterable[str] = ("GET",)) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.router.add(pattern, handler, methods)
            return handler

        return register

    def add_route(self, pattern: str, handler: Handler, methods: Iterable[str] = ("GET",)) -> None:
        self.router.add(pattern, handler, methods)
