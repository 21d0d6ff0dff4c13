"""Who may publish and subscribe: the checks, the JWT scheme, and the API key.

The seam is an ``Authenticator``: ``async def authenticate(request) -> Principal | None``
that returns None when the request carries no credentials and raises ``AuthError``
when it carries bad ones. JWT (``jwt_authenticator``) is one; an application with
session cookies or an identity service writes its own and passes it to
``install_auth``. Every check goes through ``ChannelAuth``, whatever the scheme:

    auth = install_auth(app, config, authenticate=my_sessions)
    ...
    await auth.check_publish(request, name)       # 401 / 403, or returns
    principal = await auth.check_subscribe(request, names)
    auth.end_at_expiry(stream, principal)         # the stream ends when the grant does

With no credentials, or bad ones, the answer is 401 with ``WWW-Authenticate: Bearer``
(RFC 6750 §3); with good ones that do not cover the channel, 403. Channels matching
a public pattern need nothing to subscribe to (publishing always needs a grant).

A token is read from ``Authorization: Bearer``, then the ``sse_token`` cookie, then
``?access_token=`` (EventSource can set neither headers nor, cross-site, always
cookies). The access log prints that parameter as ``REDACTED``.

A stream ends cleanly when its grant expires, so EventSource reconnects (with a
fresh token, if the page put one in the cookie). One timer per ChannelAuth serves
every stream: a heap of deadlines, woken at the earliest.
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import itertools
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..app import AnyResponse, App, Handler, HTTPError, JSONResponse, Middleware, Request
from ..auth import LEEWAY_S, MIN_SECRET_BYTES, Principal, TokenError, covers, decode_token

if TYPE_CHECKING:
    from ..config import Config
    from ..sse.streams import ChannelStream

__all__ = [
    "AUTH_STATE_KEY",
    "AuthError",
    "Authenticator",
    "ChannelAuth",
    "api_key_required",
    "authenticate",
    "install_auth",
    "jwt_authenticator",
    "token_of",
]

AUTH_STATE_KEY = "auth"  # app.state[AUTH_STATE_KEY] is the ChannelAuth, when auth is on
TOKEN_COOKIE = "sse_token"
TOKEN_PARAM = "access_token"
_VERIFIED_TOKENS = 4096  # bounds the cache of verified tokens: a few hundred bytes each


class AuthError(Exception):
    """The request's credentials are refused; ``str(e)`` says why and is safe to send back."""


Authenticator = Callable[[Request], Awaitable[Principal | None]]


def token_of(request: Request) -> str | None:
    """The bearer token: the Authorization header, the ``sse_token`` cookie, or ``?access_token=``."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for cookie_header in request.headers.get_all("cookie"):
        if TOKEN_COOKIE not in cookie_header:
            continue
        for pair in cookie_header.split(";"):
            name, eq, value = pair.strip().partition("=")
            if eq and name == TOKEN_COOKIE and value:
                return value.strip('"')
    if not request.query_string:
        return None  # most requests: no query to parse
    return request.query_param(TOKEN_PARAM) or None


def jwt_authenticator(secret: bytes, *, leeway_s: float = LEEWAY_S) -> Authenticator:
    """The HS256 scheme of ``sse_server.auth``: the token's claims are the grant."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the JWT secret needs at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2)")

    # Tokens already verified: EventSource reconnects and a publisher's requests bring
    # the same token again, and a hit costs a dict lookup and a clock read instead of
    # three base64 decodes, two JSON parses and an HMAC. Only verified tokens get in,
    # so a client cannot fill it without the secret; FIFO past the bound.
    verified: OrderedDict[str, Principal] = OrderedDict()

    async def authenticate_jwt(request: Request) -> Principal | None:
        token = token_of(request)
        if token is None:
            return None
        now = time.time()
        principal = verified.get(token)
        if principal is not None:
            if principal.expires_at is None or now < principal.expires_at:
                return principal
            del verified[token]
        try:
            principal = decode_token(token, secret, now=now, leeway_s=leeway_s)
        except TokenError as e:
            raise AuthError(str(e)) from None
        if len(verified) >= _VERIFIED_TOKENS:
            verified.popitem(last=False)
        verified[token] = principal
        return principal

    return authenticate_jwt


def authenticate(auth: ChannelAuth) -> Middleware:
    """Learn each request's principal before routing, for what runs after: per-client
    limits count by its subject (``clients.client_key``), logs may name it. A request
    with bad credentials goes on as anonymous; the check that needs them answers 401
    with the reason."""

    async def authenticate_request(request: Request, call_next: Handler) -> AnyResponse:
        try:
            request.principal = await auth.authenticator(request)
        except AuthError:
            pass
        return await call_next(request)

    return authenticate_request


def _unauthorized(detail: str, error: str | None = None) -> HTTPError:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPError(401, detail, [("WWW-Authenticate", challenge)])


class ChannelAuth:
    """The publish and subscribe checks, for any Authenticator, and stream expiry."""

    def __init__(self, authenticator: Authenticator, public: Sequence[str] = ()) -> None:
        self.authenticator = authenticator
        self.public = tuple(public)
        self._expiries = _Expiries()

    async def principal(self, request: Request) -> Principal:
        """The request's principal, or 401 when it has none."""
        if request.principal is not None:
            return request.principal
        try:
            principal = await self.authenticator(request)
        except AuthError as e:
            raise _unauthorized(f"bad credentials: {e}", "invalid_token") from None
        if principal is None:
            raise _unauthorized("this channel needs a token (Authorization: Bearer, the sse_token "
                                "cookie, or ?access_token=)")
        request.principal = principal
        return principal

    async def check_publish(self, request: Request, channel: str) -> Principal:
        principal = await self.principal(request)
        if not principal.may_publish(channel):
            raise HTTPError(403, f"this token may not publish to {channel!r}",
                            [("WWW-Authenticate", 'Bearer error="insufficient_scope"')])
        return principal

    async def check_subscribe(self, request: Request, channels: Sequence[str]) -> Principal | None:
        """The principal whose grant the stream needs (every channel it names that is not
        public must be covered), or None when every channel is public."""
        private = [c for c in channels if not covers(self.public, c)]
        if not private:
            return None
        principal = await self.principal(request)
        refused = [c for c in private if not principal.may_subscribe(c)]
        if refused:
            raise HTTPError(403, f"this token may not subscribe to {refused[0]!r}",
                            [("WWW-Authenticate", 'Bearer error="insufficient_scope"')])
        return principal

    def end_at_expiry(self, stream: ChannelStream, principal: Principal | None) -> None:
        """End ``stream`` cleanly once ``principal``'s grant expires (never, if it does not)."""
        if principal is not None and principal.expires_at is not None:
            self._expiries.add(stream, principal.expires_at)

    @property
    def streams_waiting(self) -> int:
        """Live streams waiting for their grant to expire (for tests and metrics)."""
        return self._expiries.live


class _Expiries:
    """One timer for every stream's grant: a heap of (deadline, n, weak reference).

    A stream the client left is not looked for: its weak reference dies with it and
    counts as dead; when the dead are most of the heap it is rebuilt without them,
    so churn under long-lived tokens holds no more than twice the live streams.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[ChannelStream]]] = []
        self._count = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._dead = 0

    @property
    def live(self) -> int:
        return sum(1 for _, _, ref in self._heap if ref() is not None)

    def add(self, stream: ChannelStream, expires_at: float) -> None:
        loop = asyncio.get_running_loop()
        # Tokens speak wall-clock time, timers the loop's monotonic clock: convert once.
        deadline = loop.time() + max(expires_at - time.time(), 0.0)
        heapq.heappush(self._heap, (deadline, next(self._count), weakref.ref(stream, self._died)))
        if self._timer is None or deadline < self._timer_at:
            self._schedule(loop)

    def _died(self, _ref: object) -> None:
        self._dead += 1
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2]() is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap:
            self._timer_at = self._heap[0][0]
            self._timer = loop.call_at(self._timer_at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        # self._heap each time round: a stream ended here may be freed at once, and its
        # weak reference's callback may rebuild the heap.
        while self._heap and self._heap[0][0] <= now:
            _, _, ref = heapq.heappop(self._heap)
            stream = ref()
            if stream is None:
                self._dead = max(self._dead - 1, 0)
            else:
                stream.end()  # a clean end: EventSource reconnects, and must bring a live token
        self._schedule(loop)


def api_key_required(key: str) -> Middleware:
    """``Authorization: Bearer <key>`` on ``/v1/*`` and the chat API (``/chat/stream``,
    ``/chat/streams...``), as the OpenAI SDKs send it; else 401 in OpenAI's error JSON.
    The ``/chat`` page itself stays open: it holds no data, and a browser has no key."""
    from ..ai.wire import APIError

    expected = key.encode("utf-8")

    async def check_api_key(request: Request, call_next: Handler) -> AnyResponse:
        path = request.path
        if path.startswith("/v1/") or path == "/v1" or path.startswith("/chat/stream"):
            header = request.headers.get("authorization") or ""
            scheme, _, given = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                error = APIError(401, "You didn't provide an API key: send Authorization: Bearer <key>.",
                                 code="invalid_api_key")
            elif not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
                error = APIError(401, "Incorrect API key provided.", code="invalid_api_key")
            else:
                return await call_next(request)
            return JSONResponse(error.body(), 401, [("WWW-Authenticate", "Bearer")])
        return await call_next(request)

    return check_api_key


def _secret_from_env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{what}: environment variable {name} is not set or empty")
    return value


def install_auth(app: App, config: Config, authenticate_with: Authenticator | None = None) -> ChannelAuth | None:
    """Wire what ``config`` asks for into ``app``: the API key (``--api-key-env``) and
    channel auth (``--jwt-secret-env``, or ``authenticate_with``, the application's own
    scheme). Returns the ChannelAuth that handlers check with, None when auth is off.
    Raises ValueError when a named environment variable is unset."""
    if config.api_key_env:
        app.add_middleware(api_key_required(_secret_from_env(config.api_key_env, "--api-key-env")))
    if authenticate_with is None and config.jwt_secret_env:
        secret = _secret_from_env(config.jwt_secret_env, "--jwt-secret-env").encode("utf-8")
        authenticate_with = jwt_authenticator(secret, leeway_s=config.jwt_leeway_s)
    if authenticate_with is None:
        return None
    auth = ChannelAuth(authenticate_with, config.public_channels)
    app.state[AUTH_STATE_KEY] = auth
    app.add_middleware(authenticate(auth))
    return auth

