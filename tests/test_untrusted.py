"""sse_server/untrusted.py: the integer parser, the JSON loader and utf8_safe, plus Request.json built on them."""

from __future__ import annotations

import pytest

from sse_server import Headers, HTTPError, Request
from sse_server.untrusted import BadJSON, NotAnInteger, OutOfRange, load_json, parse_int, utf8_safe


@pytest.mark.parametrize(
    ("text", "lo", "hi", "value"),
    [("0", 0, 10, 0), ("10", 0, 10, 10), ("007", 0, 10, 7), ("0" * 5_000 + "3", 0, 10, 3),
     ("-5", -10, 10, -5), ("-0", 0, 10, 0), ("1073741824", 1, 1 << 30, 1 << 30)],
)
def test_parse_int_accepts_ascii_decimals_in_range(text: str, lo: int, hi: int, value: int) -> None:
    """ASCII digits after an optional '-', leading zeros however many, give the integer they spell."""
    assert parse_int(text, lo, hi) == value


@pytest.mark.parametrize(
    "text",
    ["", "-", "²", "٣", "1²", "+5", " 5", "5 ", "1_0", "0x5", "1e3", "5.0", "--5", "5-", "\u0660"],
)
def test_parse_int_refuses_what_is_not_an_ascii_decimal(text: str) -> None:
    """Unicode digits, signs, spaces, underscores and exponents that int() or isdigit() would take are refused."""
    with pytest.raises(NotAnInteger, match="must be an integer"):
        parse_int(text, 0, 10)


@pytest.mark.parametrize("text", ["11", "-1", "9" * 5_000, "-" + "9" * 5_000, "1" + "0" * 4_400])
def test_parse_int_refuses_out_of_range_without_converting(text: str) -> None:
    """Outside the range is OutOfRange, even past int()'s 4,300-digit limit; the message names the range."""
    with pytest.raises(OutOfRange, match="must be between 0 and 10"):
        parse_int(text, 0, 10)


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b'{"a": [1, 2.5, "x"]}', {"a": [1, 2.5, "x"]}), ('"caf\u00e9"', "caf\u00e9"),
     (b'"\\ud83d\\ude00"', "\U0001f600"), (b"[" * 500 + b"]" * 500, load_json(b"[" * 500 + b"]" * 500)),
     (b"1" * 4_000, int("1" * 4_000)), (b"1e308", 1e308)],
)
def test_load_json_accepts_json(raw: bytes | str, value: object) -> None:
    """Ordinary JSON, a surrogate pair, moderate nesting and a 4,000-digit integer load as json.loads would."""
    assert load_json(raw) == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
     (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
     (b"9" * 5_000, "too many digits"), (b"[1e999]", "too large"), (b"-1e999", "too large"),
     (b"NaN", "NaN is not a JSON number"), (b"[Infinity]", "Infinity is not a JSON number"),
     (b"\xff\xfe\xfd", "not UTF-8"), (b"{nope", "Expecting property name"), (b"", "Expecting value"),
     (b'"\\ud800"', "lone surrogate"), (b'{"\\udfff": 1}', "lone surrogate"),
     (b'[[{"k": ["ok", "\\ud83d"]}]]', "lone surrogate"), ('"\ud800"', "lone surrogate")],
)
def test_load_json_refuses_with_a_message_that_encodes(raw: bytes | str, reason: str) -> None:
    """Deep nesting, huge or non-finite numbers, bad text and lone surrogates are BadJSON, whose message encodes."""
    with pytest.raises(BadJSON, match=reason) as caught:
        load_json(raw)
    str(caught.value).encode("utf-8")


def test_load_json_replaces_lone_surrogates_when_asked() -> None:
    """surrogates="replace" makes every lone surrogate '?', in keys and nested values, keeping key order."""
    raw = b'{"\\ud800k": ["a\\udc00", {"x": "\\ud83d\\ude00\\ud83d"}], "z": 1}'
    assert load_json(raw, surrogates="replace") == {"?k": ["a?", {"x": "\U0001f600?"}], "z": 1}
    assert list(load_json(raw, surrogates="replace")) == ["?k", "z"]


def test_load_json_replaces_far_below_the_recursion_limit() -> None:
    """The surrogate walk is iterative: a string as deep as the parser allows is still cleaned."""
    depth = 900
    value = load_json(b"[" * depth + b'"\\ud800"' + b"]" * depth, surrogates="replace")
    for _ in range(depth):
        value = value[0]
    assert value == "?"


def test_utf8_safe() -> None:
    """utf8_safe leaves encodable text as it is (the same object) and makes lone surrogates '?'."""
    text = "caf\u00e9 \U0001f600"
    assert utf8_safe(text) is text
    assert utf8_safe("a\ud800b\udfff") == "a?b?"


def _request(body: bytes) -> Request:
    async def read() -> bytes:
        return body

    return Request("POST", "/", "/", "", "HTTP/1.1", Headers([]), read_body=read)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"[" * 200_000 + b"]" * 200_000, "nested too deeply"), (b'{"m": "\\ud800"}', "lone surrogate"),
     (b"9" * 5_000, "too many digits"), (b"\xff", "not UTF-8"), (b"{", "Expecting")],
)
async def test_request_json_answers_400(body: bytes, reason: str) -> None:
    """Request.json turns what load_json refuses into an HTTPError 400 saying why."""
    with pytest.raises(HTTPError) as caught:
        await _request(body).json()
    assert caught.value.status == 400 and reason in caught.value.detail
    caught.value.detail.encode("utf-8")


async def test_request_json_loads_json() -> None:
    """Request.json gives the body's JSON value."""
    assert await _request(b'{"a": [1, "\\u00e9"]}').json() == {"a": [1, "\u00e9"]}
