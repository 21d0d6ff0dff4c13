"""sse_server.auth, pure: HS256 tokens minted and checked, and channel patterns."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from sse_server.auth import LEEWAY_S, Principal, TokenError, covers, decode_token, mint_token

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], *, secret: bytes = SECRET,
          digest: Any = hashlib.sha256, signature: str | None = None) -> str:
    """A token with any header and claims, signed (or not) as told."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if signature is None:
        signature = b64(hmac.new(secret, signing_input.encode(), digest).digest())
    return f"{signing_input}.{signature}"


HS256 = {"alg": "HS256", "typ": "JWT"}
GRANT = {"publish": ["news"], "subscribe": ["orders/*"], "sub": "alice", "exp": NOW + 60}


def test_a_minted_token_grants_its_claims() -> None:
    """mint_token's output decodes to the subject, patterns and expiry it was given (plus the leeway)."""
    token = mint_token(SECRET, publish=["news"], subscribe=["orders/*", "x"], exp_s=60, sub="alice", now=NOW)
    assert decode_token(token, SECRET, now=NOW) == Principal(
        subject="alice", publish=("news",), subscribe=("orders/*", "x"), expires_at=NOW + 60 + LEEWAY_S,
    )
    assert "=" not in token  # base64url without padding (RFC 7515 §2)


def test_a_token_without_exp_never_expires() -> None:
    """exp_s=None mints a token with no exp; its principal has no expiry."""
    token = mint_token(SECRET, subscribe=["*"], exp_s=None, now=NOW)
    assert decode_token(token, SECRET, now=NOW + 10**9).expires_at is None


REFUSED = [
    ("alg none, no signature", forge({"alg": "none"}, GRANT, signature=""), "alg"),
    ("alg none, signed anyway", forge({"alg": "none"}, GRANT), "alg"),
    ("alg None spelled otherwise", forge({"alg": "None"}, GRANT, signature=""), "alg"),
    ("alg HS512", forge({"alg": "HS512"}, GRANT, digest=hashlib.sha512), "alg"),
    ("alg RS256", forge({"alg": "RS256"}, GRANT), "alg"),
    ("alg missing", forge({"typ": "JWT"}, GRANT), "alg"),
    ("alg not a string", forge({"alg": ["HS256"]}, GRANT), "alg"),
    ("crit extension", forge({"alg": "HS256", "crit": ["b64"], "b64": False}, GRANT), "crit"),
    ("another secret", forge(HS256, GRANT, secret=b"t" * 32), "signature"),
    ("signature cut", forge(HS256, GRANT)[:-2], "signature"),
    ("signature of other claims", forge(HS256, GRANT).rsplit(".", 1)[0] + "." + forge(HS256, {})
     .rsplit(".", 1)[1], "signature"),
    ("expired", forge(HS256, {**GRANT, "exp": NOW - LEEWAY_S}), "expired"),
    ("not yet valid", forge(HS256, {**GRANT, "nbf": NOW + LEEWAY_S + 1}), "nbf"),
    ("exp a string", forge(HS256, {**GRANT, "exp": str(NOW + 60)}), "exp"),
    ("exp a bool", forge(HS256, {**GRANT, "exp": True}), "exp"),
    ("audience", forge(HS256, {**GRANT, "aud": "elsewhere"}), "aud"),
    ("publish a string", forge(HS256, {**GRANT, "publish": "news"}), "publish"),
    ("subscribe with a number", forge(HS256, {**GRANT, "subscribe": [1]}), "subscribe"),
    ("empty pattern", forge(HS256, {**GRANT, "subscribe": [""]}), "subscribe"),
    ("sub a number", forge(HS256, {**GRANT, "sub": 7}), "sub"),
    ("claims an array", forge(HS256, [GRANT]), "object"),  # type: ignore[arg-type]
    ("two parts", "a.b", "three"),
    ("four parts", forge(HS256, GRANT) + ".x", "three"),
    ("padding", forge(HS256, GRANT) + "=", "signature"),
    ("claims padded", ".".join(p + "=" if i == 1 else p for i, p in enumerate(forge(HS256, GRANT).split("."))),
     "base64url"),
    ("standard alphabet", forge(HS256, GRANT).replace("-", "+").replace("_", "/") + "+/", "base64url|signature"),
    ("header not JSON", b64(b"{alg") + ".e30.", "JSON"),
    ("huge", "a" * 9000, "characters"),
]


@pytest.mark.parametrize(("token", "reason"), [(t, r) for _, t, r in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_refused_tokens_say_why(token: str, reason: str) -> None:
    """Each malformed, forged, wrongly signed or out-of-date token is a TokenError naming its fault."""
    with pytest.raises(TokenError, match=reason):
        decode_token(token, SECRET, now=NOW)


def test_a_non_canonical_signature_spelling_is_refused() -> None:
    """A signature whose last character differs only in unused bits decodes alike, and is still refused."""
    token = forge(HS256, GRANT)
    last = token[-1]
    # 32 bytes are 43 base64 characters: the last carries 4 bits and 2 unused ones.
    twin = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = twin.index(last)
    other = twin[index ^ 1]
    assert base64.urlsafe_b64decode(token.rsplit(".", 1)[1][:-1] + other + "=") == base64.urlsafe_b64decode(
        token.rsplit(".", 1)[1] + "=")
    with pytest.raises(TokenError, match="signature"):
        decode_token(token[:-1] + other, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("claims", "now", "ok"),
    [
        ({"exp": NOW}, NOW + LEEWAY_S - 0.001, True),  # within the leeway past exp
        ({"exp": NOW}, NOW + LEEWAY_S, False),  # RFC 7519 §4.1.4: on or after exp (+ leeway)
        ({"nbf": NOW}, NOW - LEEWAY_S, True),
        ({"nbf": NOW}, NOW - LEEWAY_S - 0.001, False),
        ({"exp": NOW + 1.5, "nbf": NOW - 1.5}, NOW, True),  # NumericDate may be fractional
    ],
)
def test_exp_and_nbf_honour_the_leeway(claims: dict[str, Any], now: float, ok: bool) -> None:
    """exp and nbf are checked against now with LEEWAY_S of clock skew either way, no more."""
    token = forge(HS256, claims)
    if ok:
        decode_token(token, SECRET, now=now)
    else:
        with pytest.raises(TokenError):
            decode_token(token, SECRET, now=now)


def test_leeway_zero_is_exact() -> None:
    """With leeway_s=0 a token is refused the moment exp arrives."""
    token = forge(HS256, {"exp": NOW})
    decode_token(token, SECRET, now=NOW - 0.001, leeway_s=0)
    with pytest.raises(TokenError, match="expired"):
        decode_token(token, SECRET, now=NOW, leeway_s=0)


def test_unknown_claims_and_typ_are_ignored() -> None:
    """Claims and header fields we do not use (iat, jti, kid, typ) do not stop a valid token."""
    token = forge({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}, {"subscribe": ["a"], "iat": 1, "jti": "x"})
    assert decode_token(token, SECRET, now=NOW).may_subscribe("a")


@pytest.mark.parametrize(
    ("patterns", "channel", "expected"),
    [
        (["news"], "news", True),
        (["news"], "news2", False),
        (["news"], "new", False),
        (["orders/*"], "orders/1", True),
        (["orders/*"], "orders/eu/2", True),
        (["orders/*"], "orders", False),
        (["orders/*"], "ordersx", False),
        (["*"], "anything at all", True),
        (["a*"], "a", True),  # the prefix itself
        (["a*b"], "a*b", True),  # a * not at the end is a character
        (["a*b"], "axb", False),
        ([], "news", False),
        (["x", "news"], "news", True),
    ],
)
def test_channel_patterns(patterns: list[str], channel: str, expected: bool) -> None:
    """A pattern is an exact name, a prefix ending in *, or * for everything."""
    assert covers(patterns, channel) is expected


def test_short_secrets_are_refused_for_minting() -> None:
    """mint_token refuses a secret under 256 bits (RFC 7518 §3.2)."""
    with pytest.raises(ValueError, match="32 bytes"):
        mint_token(b"short", subscribe=["*"], now=NOW)
