"""Cross-origin access (the Fetch standard's CORS protocol) for an allow-list of origins.

A page on another origin may call this server only if the response says so. For an
allowed ``Origin`` this middleware answers the preflight (``OPTIONS`` with
``Access-Control-Request-Method``) itself, before routing, with 204; and adds to
every other response, streams included, the allow-origin and the headers a page may
read (``SSE-Reset``, ``Chat-Stream-Id``, ``Location``). An origin not on the list
gets no CORS header at all, and the browser keeps the response from the page.

Exact origins (``https://app.example``) are echoed with
``Access-Control-Allow-Credentials: true``, so EventSource ``withCredentials`` and
fetch ``credentials: "include"`` carry cookies; ``*`` allows any origin without
credentials (the Fetch standard forbids ``*`` with them). ``Vary: Origin`` tells
caches the answer depends on the origin.

    app.add_middleware(cors(["https://app.example"]))
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from ..app import AnyResponse, Handler, Middleware, Request, Response

__all__ = ["ALLOW_HEADERS", "EXPOSE_HEADERS", "MAX_AGE_S", "cors", "check_origin"]

ALLOW_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
# What our clients send: JSON bodies, bearer tokens, EventSource's resume and cache
# headers, the chat page's Prefer: respond-async, a publisher's Idempotency-Key.
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, Cache-Control, Accept, Prefer, Idempotency-Key"
EXPOSE_HEADERS = "SSE-Reset, Chat-Stream-Id, Location, Retry-After, Idempotent-Replayed"
MAX_AGE_S = 600  # browsers cache a preflight this long (Chromium caps it at 7200)


def check_origin(origin: str) -> str:
    """``origin`` if it is ``*`` or a serialised origin (scheme://host[:port], nothing
    after), which is all a browser ever sends in ``Origin``; ValueError otherwise."""
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or origin != f"{parts.scheme}://{parts.netloc}":
        raise ValueError(f"an origin is scheme://host[:port] with no path or slash, got {origin!r}")
    return origin


def cors(origins: Sequence[str]) -> Middleware:
    """The CORS middleware for ``origins`` (exact origins, or ``*``)."""
    exact = frozenset(check_origin(o) for o in origins if o != "*")
    any_origin = "*" in origins

    def allowed(origin: str | None) -> list[tuple[str, str]] | None:
        if origin is None:
            return None
        if origin in exact:
            return [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true")]
        if any_origin:
            return [("Access-Control-Allow-Origin", "*")]
        return None

    async def cors_middleware(request: Request, call_next: Handler) -> AnyResponse:
        origin = request.headers.get("origin")
        grant = allowed(origin)
        if (
            grant is not None and request.method == "OPTIONS"
            and request.headers.get("access-control-request-method") is not None
        ):
            return Response(b"", 204, [
                *grant,
                ("Access-Control-Allow-Methods", ALLOW_METHODS),
                ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                ("Access-Control-Max-Age", str(MAX_AGE_S)),
                ("Vary", "Origin"),
            ])
        response = await call_next(request)
        if grant is not None:
            response.headers.extend(grant)
            response.headers.append(("Access-Control-Expose-Headers", EXPOSE_HEADERS))
        if exact:
            response.headers.append(("Vary", "Origin"))
        return response

    return cors_middleware
