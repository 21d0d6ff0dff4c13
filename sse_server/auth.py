"""Who may publish and subscribe to which channels, and HS256 tokens that say so.

Pure: no I/O, and no clock but ``mint_token``'s default ``now``. A ``Principal`` is what any scheme
(a token, a session cookie, an identity service) decides about one request: who it
is, the channel patterns it may publish to and subscribe to, and when that ends.
The checks (middleware/auth.py) only ever read a Principal; JWT is one way to get one.

Tokens are JWS compact serialisations (RFC 7515) of JWT claims (RFC 7519), signed
with HMAC-SHA256 (RFC 7518 §3.2) and nothing else. The header's ``alg`` is read
only to refuse anything but ``HS256``: a verifier that lets the token pick its own
algorithm accepts ``none`` (no signature) or an RSA public key used as an HMAC
secret. Channel claims, after Mercure's and Centrifugo's:

    {"sub": "alice", "exp": 1767225600,
     "publish": ["orders/*"], "subscribe": ["news", "orders/*"]}

A pattern is an exact channel name, a prefix ending in ``*`` (``"orders/*"`` covers
``orders/1`` and ``orders/eu/2``), or ``"*"`` (every channel).

    >>> token = mint_token(b"k" * 32, publish=["news"], now=0, exp_s=60)
    >>> decode_token(token, b"k" * 32, now=30).may_publish("news")
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .untrusted import BadJSON, load_json

__all__ = [
    "DEFAULT_SECRET_ENV",
    "LEEWAY_S",
    "MAX_TOKEN_CHARS",
    "MIN_SECRET_BYTES",
    "Principal",
    "TokenError",
    "covers",
    "decode_token",
    "mint_token",
]

DEFAULT_SECRET_ENV = "SSE_JWT_SECRET"  # where `python -m sse_server token` looks unless told otherwise
# Clock skew allowed on exp and nbf (RFC 7519 §4.1.4 "some small leeway"). The host
# that mints tokens and this one disagree by milliseconds under NTP and by seconds
# on a VM that just resumed; 10 s covers that, and an expired token lives on for
# at most 10 s more, which a stream's end at expiry honours too.
LEEWAY_S = 10.0
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash, 256 bits
MAX_TOKEN_CHARS = 8 * 1024  # a token is decoded and hashed per request; it fits in a header anyway
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEADER = {"alg": "HS256", "typ": "JWT"}
# Encoded headers already found acceptable: issuers send one or two spellings, so
# most tokens skip a base64 decode and a JSON parse. The set only stops a header
# being parsed twice (it grants nothing), and a client inventing headers fills it
# to its bound, no further.
_GOOD_HEADERS: set[str] = set()
_MAX_GOOD_HEADERS = 64
_CLAIMS_DECODER = json.JSONDecoder()


class TokenError(ValueError):
    """A token we will not accept; ``str(e)`` says why and is safe to send back."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is and which channels it may use, until ``expires_at``.

    ``subject`` names the client (per-client limits count by it, logs may show it);
    ``expires_at`` is a Unix time after which the grant is void (a stream it opened
    ends then), None for never.
    """

    subject: str | None = None
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    expires_at: float | None = None

    def may_publish(self, channel: str) -> bool:
        return covers(self.publish, channel)

    def may_subscribe(self, channel: str) -> bool:
        return covers(self.subscribe, channel)


def covers(patterns: Iterable[str], channel: str) -> bool:
    """Whether any pattern names ``channel``: exactly, as a ``prefix*``, or ``*``.

    >>> covers(["orders/*"], "orders/7"), covers(["orders/*"], "orders"), covers(["*"], "x")
    (True, False, True)
    """
    for pattern in patterns:
        if pattern.endswith("*"):
            if channel.startswith(pattern[:-1]):
                return True
        elif pattern == channel:
            return True
    return False


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(part: str, what: str) -> bytes:
    """base64url without padding (RFC 7515 §2), in its one canonical spelling.

    ``urlsafe_b64decode`` skips characters outside the alphabet and ignores the
    unused low bits of the last one, so several spellings would decode alike;
    comparing the re-encoding refuses all but one.
    """
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise TokenError(f"token {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"token {what} is not base64url") from None
    if _b64encode(data) != part:
        raise TokenError(f"token {what} is not base64url")
    return data


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = load_json(data)
    except BadJSON:
        raise TokenError(f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"token {what} is not a JSON object")
    return value


def _signed_claims(data: bytes) -> dict[str, Any]:
    """Claims whose signature checked: the secret's holder wrote them, so the plain
    decoder will do (load_json's guards against hostile input cost a decoder per call)."""
    try:
        value = _CLAIMS_DECODER.decode(data.decode("utf-8"))
    except (ValueError, RecursionError):
        raise TokenError("token claims is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("token claims is not a JSON object")
    return value


def _sign(signing_input: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # NumericDate (RFC 7519 §2): a JSON number; a bool is a JSON number to Python only.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError(f"token claim {name!r} is not a number")
    return float(value)


def _patterns(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise TokenError(f"token claim {name!r} is not a list of channel patterns")
    return tuple(value)


def decode_token(token: str, secret: bytes, *, now: float, leeway_s: float = LEEWAY_S) -> Principal:
    """The Principal a valid HS256 token grants at Unix time ``now``; TokenError otherwise.

    Refused: any ``alg`` but HS256, a ``crit`` header (RFC 7515 §4.1.11: we know
    no extension), a bad signature, ``now`` at or past ``exp`` or before ``nbf``
    (each by more than ``leeway_s``), an ``aud`` claim (RFC 7519 §4.1.3: this server
    has no audience name to find in it), channel claims that are not string lists.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"token over {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token is not three base64url parts joined by dots")
    if parts[0] not in _GOOD_HEADERS:
        header = _json_object(_b64decode(parts[0], "header"), "header")
        alg = header.get("alg")
        if alg != "HS256":
            # Decided before the signature is looked at: "none", HS512, RS256... all mean
            # a different verifier, and there is only this one.
            raise TokenError(f"token alg {str(alg)[:20]!r} refused: only HS256 is accepted")
        if "crit" in header:
            raise TokenError("token header has crit extensions we do not understand")
        if len(_GOOD_HEADERS) < _MAX_GOOD_HEADERS:
            _GOOD_HEADERS.add(parts[0])
    if not _B64URL.fullmatch(parts[1]):
        raise TokenError("token claims is not base64url")
    # Compared encoded: the one canonical spelling of the right MAC matches, and
    # nothing else does (RFC 7515 §2: base64url without padding).
    expected = _b64encode(_sign(f"{parts[0]}.{parts[1]}".encode("ascii"), secret))
    if not hmac.compare_digest(parts[2].encode("ascii", "replace"), expected.encode("ascii")):
        raise TokenError("token signature does not match")
    claims = _signed_claims(_b64decode(parts[1], "claims"))
    exp = _time_claim(claims, "exp")
    nbf = _time_claim(claims, "nbf")
    if exp is not None and now >= exp + leeway_s:
        raise TokenError("token expired")
    if nbf is not None and now < nbf - leeway_s:
        raise TokenError("token not valid yet (nbf)")
    if "aud" in claims:
        raise TokenError("token has an audience (aud) this server cannot check")
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise TokenError("token claim 'sub' is not a string")
    return Principal(
        subject=sub,
        publish=_patterns(claims, "publish"),
        subscribe=_patterns(claims, "subscribe"),
        expires_at=None if exp is None else exp + leeway_s,
    )


def mint_token(
    secret: bytes | str,
    publish: Sequence[str] = (),
    subscribe: Sequence[str] = (),
    *,
    exp_s: float | None = 3600,
    sub: str | None = None,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """An HS256 token granting ``publish`` and ``subscribe``, valid ``exp_s`` seconds
    from ``now`` (default: the current time; ``exp_s=None``: it never expires, so
    keep it out of browsers). ``sub`` names the client.

    >>> mint_token("s" * 32, subscribe=["*"], now=0, exp_s=None).count(".")
    2
    """
    if now is None:
        now = time.time()
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2)")
    claims: dict[str, Any] = {**(extra or {}), "iat": int(now)}
    if sub is not None:
        claims["sub"] = sub
    if exp_s is not None:
        claims["exp"] = int(now + exp_s)
    if publish:
        claims["publish"] = list(publish)
    if subscribe:
        claims["subscribe"] = list(subscribe)
    head = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}"
    return f"{signing_input}.{_b64encode(_sign(signing_input.encode('ascii'), key))}"
