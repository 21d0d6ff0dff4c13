"""Publish to a hub from a backend, with retries that store each event once. Stdlib only.

    from sse_server.client import Publisher

    with Publisher("https://hub.example", token=os.environ["HUB_TOKEN"]) as hub:
        sent = hub.publish("orders/17", json.dumps(order), event="paid")
        sent.id, sent.subscribers          # the event's id, subscribers on the node that took it

    async with AsyncPublisher("http://127.0.0.1:8000") as hub:   # the same on asyncio streams
        await hub.publish("news", "hello")

Strategy. Each logical publish gets one random ``Idempotency-Key``, sent with every
attempt of it: the hub stores an event once per channel and key (see sse_server/hub.py),
so an attempt whose answer was lost (a dropped connection, a timeout, a 503 from a
stalled Redis that still ran the script) is answered again with the same id rather
than stored twice. That makes retrying safe, so the client retries what may pass on
a second try: connection errors, timeouts, 408, 429, 502, 503 and 504, with
exponential backoff and full jitter, or after the ``Retry-After`` the hub sent (up to
``retry_after_max_s``). Any other answer is final: a 4xx is the caller's to fix and a
500 is the hub's bug, so either raises PublishError with the status and the hub's
message at once. Retries are bounded by ``retries``; each attempt by ``timeout_s``
per connect and per read.

One kept-alive connection per publisher (a new one after an error or a
``Connection: close``); HTTPS uses ``ssl.create_default_context()`` unless a context
is given. ``Publisher`` is thread-safe: a lock makes threads take turns on its
connection (for publishes in parallel, one Publisher per thread). ``AsyncPublisher``
is for one event loop; concurrent publishes on it take turns the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import random
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote, urlsplit

from . import __version__
from .channels.engine import Published
from .http11 import ChunkedDecoder, ProtocolError

__all__ = ["AsyncPublisher", "PublishError", "Published", "Publisher", "RetryPolicy"]

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})  # the hub or a proxy in front says: try again
_MAX_HEAD_BYTES = 64 * 1024  # of a hub's answer (AsyncPublisher); a hub sends a few hundred
_MAX_BODY_BYTES = 1024 * 1024  # of an answer's body: a JSON object or a one-line reason


class PublishError(Exception):
    """A publish that did not go through: ``status`` is the hub's final answer (None: no
    answer after every attempt), ``message`` what it said, ``attempts`` how many were made."""

    def __init__(self, status: int | None, message: str, attempts: int) -> None:
        if status is None:
            text = f"the hub did not answer after {attempts} attempt(s): {message}"
        else:
            text = f"the hub answered {status}: {message}"
        super().__init__(text)
        self.status = status
        self.message = message
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait between attempts of one publish."""

    retries: int = 5  # attempts after the first
    backoff_first_s: float = 0.1  # the first wait's upper bound; it doubles per attempt
    backoff_max_s: float = 5.0
    retry_after_max_s: float = 30.0  # a hub asking for longer is waited this long

    def delay_s(self, attempt: int, retry_after: str | None) -> float:
        """The wait before attempt ``attempt + 1`` (attempt 0 was the first)."""
        asked = _retry_after_s(retry_after)
        if asked is not None:
            return min(asked, self.retry_after_max_s)
        # Full jitter: publishers that failed together do not retry together.
        return random.uniform(0, min(self.backoff_max_s, self.backoff_first_s * 2**attempt))


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retry(Exception):
    """An attempt that may pass if made again: the hub's status (None: no answer), what it
    said, and its ``Retry-After``, if any."""

    def __init__(self, status: int | None, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def final(self, attempts: int) -> PublishError:
        return PublishError(self.status, self.message, attempts)


class _Base:
    """What both publishers share: the target, the request head, reading an answer, retrying."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 5,
        policy: RetryPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``base_url``: the hub, ``http(s)://host[:port][/prefix]``; ``token``: sent as
        ``Authorization: Bearer``; ``timeout_s``: each connect and each read of an attempt;
        ``retries``: attempts after the first (``policy`` sets the waits too, and wins);
        ``ssl_context``: for HTTPS, instead of ``ssl.create_default_context()``."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a hub's base URL is http://host[:port][/prefix] or https://..., got {base_url!r}")
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be more than 0 and retries at least 0")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.policy = policy or RetryPolicy(retries=retries)
        self.ssl_context = (ssl_context or ssl.create_default_context()) if self.tls else None
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if parts.port is None else f"{host}:{self.port}"
        self._init_connection()

    def _init_connection(self) -> None:
        """The publisher's lock and (no) connection yet."""
        raise NotImplementedError

    def _request(self, channel: str, data: str, event: str | None, key: str) -> tuple[str, dict[str, str], bytes]:
        target = f"{self.prefix}/channels/{quote(channel, safe='')}/events"
        if event is not None:
            target += f"?event={quote(event, safe='')}"
        body = data.encode("utf-8")
        headers = {
            "Host": self._host_header,
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Length": str(len(body)),
            "Idempotency-Key": key,
            "User-Agent": f"sse_server-client/{__version__}",
        }
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return target, headers, body

    @staticmethod
    def _answer(status: int, headers: Mapping[str, str], body: bytes) -> Published:
        """The Published of a 202; _Retry for a status worth retrying; PublishError for the rest."""
        text = body.decode("utf-8", "replace").strip()
        if status in RETRY_STATUSES:
            raise _Retry(status, text, headers.get("retry-after"))
        if status != 202:
            raise PublishError(status, text, 0)
        try:
            answer = json.loads(text)
            return Published(str(answer["id"]), int(answer["subscribers"]),
                             replayed=headers.get("idempotent-replayed") == "true")
        except (ValueError, KeyError, TypeError):
            raise PublishError(status, f"not a hub's publish answer: {text[:200]!r}", 0) from None

    def _wait_s(self, error: PublishError | _Retry, attempt: int) -> float:
        """How long to wait after attempt ``attempt`` (0: the first) failed; raises PublishError
        when it was final (an answer not worth retrying, or the last attempt)."""
        if isinstance(error, PublishError):
            error.attempts = attempt + 1
            raise error
        if attempt >= self.policy.retries:
            raise error.final(attempt + 1) from None
        return self.policy.delay_s(attempt, error.retry_after)


def _new_key() -> str:
    return secrets.token_urlsafe(18)  # 24 characters of base64url: visible ASCII, as the hub wants


class Publisher(_Base):
    """Publish over one kept-alive ``http.client`` connection; thread-safe (see the module docstring)."""

    _conn: http.client.HTTPConnection | None

    def _init_connection(self) -> None:
        self._lock = threading.Lock()
        self._conn = None

    def publish(self, channel: str, data: str, *, event: str | None = None,
                idempotency_key: str | None = None) -> Published:
        """Publish ``data`` on ``channel``; the same ``idempotency_key`` (random by default)
        is sent with every attempt. Raises PublishError when it did not go through."""
        target, headers, body = self._request(channel, data, event, idempotency_key or _new_key())
        with self._lock:
            attempt = 0
            while True:
                try:
                    return self._attempt(target, headers, body)
                except (PublishError, _Retry) as e:
                    time.sleep(self._wait_s(e, attempt))
                attempt += 1

    def _attempt(self, target: str, headers: dict[str, str], body: bytes) -> Published:
        conn = self._conn
        if conn is None:
            if self.ssl_context is not None:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                   context=self.ssl_context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._conn = conn
        try:
            conn.request("POST", target, body, headers, encode_chunked=False)
            response = conn.getresponse()
            answer = response.read(_MAX_BODY_BYTES)
            if response.will_close or not response.isclosed():
                self._close()  # closing, or a body over the cap left unread: the connection is done
        except ssl.SSLCertVerificationError as e:  # not a passing fault: say so at once
            self._close()
            raise PublishError(None, f"the hub's certificate is not trusted: {e}", 0) from None
        except (OSError, http.client.HTTPException) as e:
            self._close()
            raise _Retry(None, f"{type(e).__name__}: {e}") from None
        return self._answer(response.status, {k.lower(): v for k, v in response.getheaders()}, answer)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher(_Base):
    """``Publisher`` on asyncio streams, for one event loop: ``await hub.publish(...)``."""

    _streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None

    def _init_connection(self) -> None:
        self._lock = asyncio.Lock()
        self._streams = None

    async def publish(self, channel: str, data: str, *, event: str | None = None,
                      idempotency_key: str | None = None) -> Published:
        """As Publisher.publish."""
        target, headers, body = self._request(channel, data, event, idempotency_key or _new_key())
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raw = f"POST {target} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body
        async with self._lock:
            attempt = 0
            while True:
                try:
                    return await self._attempt(raw)
                except (PublishError, _Retry) as e:
                    await asyncio.sleep(self._wait_s(e, attempt))
                attempt += 1

    async def _attempt(self, raw: bytes) -> Published:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._streams is None:
                    self._streams = await asyncio.open_connection(
                        self.host, self.port, ssl=self.ssl_context, limit=_MAX_HEAD_BYTES,
                        server_hostname=self.host if self.ssl_context is not None else None)
                reader, writer = self._streams
                writer.write(raw)
                await writer.drain()
                status, headers, body = await _read_answer(reader)
        except ssl.SSLCertVerificationError as e:
            await self._close()
            raise PublishError(None, f"the hub's certificate is not trusted: {e}", 0) from None
        except (OSError, TimeoutError, EOFError, asyncio.LimitOverrunError, ValueError, ProtocolError) as e:
            # EOFError: closed mid-answer; LimitOverrunError: a head over _MAX_HEAD_BYTES;
            # ValueError: an answer that is not HTTP/1.1; ProtocolError: broken chunked framing
            await self._close()
            raise _Retry(None, f"{type(e).__name__}: {e}") from None
        if headers.get("connection", "").lower() == "close":
            await self._close()
        return self._answer(status, headers, body)

    async def _close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await streams[1].wait_closed()
            except (OSError, TimeoutError):
                pass  # the peer already went; the transport is closed either way

    async def aclose(self) -> None:
        async with self._lock:
            await self._close()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (names lower-cased), body by length, chunks or EOF."""
    lines = (await reader.readuntil(b"\r\n\r\n"))[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        raise ValueError(f"not an HTTP/1.1 status line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(code)
    if status < 200 or status in (204, 304):
        return status, headers, b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoder = ChunkedDecoder(max_body_bytes=_MAX_BODY_BYTES)
        parts = []
        while not decoder.done:
            parts.append(decoder.feed(await reader.readexactly(decoder.safe_feed_bytes)))
        return status, headers, b"".join(parts)
    length = headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()) or int(length) > _MAX_BODY_BYTES:
            raise ValueError(f"Content-Length {length[:30]!r} is not one a hub's answer has")
        return status, headers, await reader.readexactly(int(length))
    headers["connection"] = "close"  # the body ends with the connection
    return status, headers, await reader.read(_MAX_BODY_BYTES)
