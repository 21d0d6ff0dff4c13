"""sse_server: a standard-library HTTP/1.1 server for Server-Sent Events and streamed HTML."""

from __future__ import annotations

from .app import (
    App,
    Headers,
    HTMLResponse,
    HTTPError,
    JSONResponse,
    PlainTextResponse,
    Request,
    Response,
    StreamingResponse,
)
from .config import Config
from .server import Server

__all__ = [
    "App",
    "Config",
    "Headers",
    "HTMLResponse",
    "HTTPError",
    "JSONResponse",
    "PlainTextResponse",
    "Request",
    "Response",
    "Server",
    "StreamingResponse",
]
__version__ = "0.1.0"
