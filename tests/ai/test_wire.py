"""The OpenAI wire format, pure: request validation, error objects, chunk and object builders."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sse_server.ai.mockmodel import MOCK_MODEL
from sse_server.ai.wire import (
    DONE,
    APIError,
    ChunkEncoder,
    completion_id,
    completion_object,
    decode_json_body,
    model_object,
    out_of_range,
    parse_chat_request,
    upstream_error,
    utf8_safe,
)
from tests.ai.helpers import MESSAGES


def data_events(wire: str) -> list[str]:
    """The ``data:`` payloads of SSE text whose events are one data line each."""
    assert wire.endswith("\n\n")
    events = wire[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ([], 400, None, "invalid_type"),
        ({"model": MOCK_MODEL}, 400, "messages", "missing_required_parameter"),
        ({"messages": MESSAGES}, 400, "model", "missing_required_parameter"),
        ({"model": MOCK_MODEL, "messages": "hi"}, 400, "messages", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": []}, 400, "messages", "invalid_value"),
        ({"model": MOCK_MODEL, "messages": [{"content": "x"}]}, 400, "messages[0].role", "missing_required_parameter"),
        ({"model": MOCK_MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role",
         "invalid_value"),
        ({"model": MOCK_MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content",
         "invalid_type"),
        ({"model": MOCK_MODEL, "messages": [{"role": "user"}]}, 400, "messages[0].content",
         "missing_required_parameter"),
        ({"model": MOCK_MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, 400,
         "messages[0].content[0].text", "invalid_type"),
        ({"model": 3, "messages": MESSAGES}, 400, "model", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "stream": "yes"}, 400, "stream", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "max_tokens": "9"}, 400, "max_tokens", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "max_tokens": True}, 400, "max_tokens", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "n": 2}, 400, "n", "invalid_value"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "temperature": "hot"}, 400, "temperature", "invalid_type"),
        ({"model": MOCK_MODEL, "messages": MESSAGES, "stream_options": {"include_usage": True}}, 400,
         "stream_options", "invalid_value"),
        ({"model": MOCK_MODEL, "messages": [MESSAGES[0]] * 2_049}, 400, "messages", "invalid_value"),
    ],
)
def test_parse_chat_request_rejects(body: object, status: int, param: str | None, code: str) -> None:
    """Malformed chat bodies raise APIError with OpenAI's param and code."""
    with pytest.raises(APIError) as info:
        parse_chat_request(body)
    assert (info.value.status, info.value.error["param"], info.value.error["code"]) == (status, param, code)


def test_parse_chat_request_accepts_content_parts() -> None:
    """Content-part arrays contribute their text parts; max_completion_tokens wins over max_tokens."""
    parts = [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]
    chat = parse_chat_request({"model": "m", "max_tokens": 9, "max_completion_tokens": 4, "messages": [
        {"role": "user", "content": parts}, {"role": "assistant", "content": None}]})
    assert chat.messages == [{"role": "user", "content": "a\nb"}, {"role": "assistant", "content": ""}]
    assert chat.max_tokens == 4


def test_parse_chat_request_options() -> None:
    """stream, stream_options.include_usage and a missing model (when allowed) come through as given."""
    chat = parse_chat_request({"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
                              require_model=False)
    assert (chat.model, chat.stream, chat.include_usage, chat.max_tokens) == (None, True, True, None)
    assert parse_chat_request({"model": "m", "messages": MESSAGES, "stream": None}).stream is False


def test_lone_surrogates_become_replacement_characters() -> None:
    """Text JSON can carry but UTF-8 cannot (a lone surrogate) is replaced, other text kept as is."""
    assert utf8_safe("caf\ud800 latte") == "caf? latte"
    assert utf8_safe("café 😀") == "café 😀"
    chat = parse_chat_request(json.loads('{"model": "m", "messages": [{"role": "user", "content": "a\\ud800"}]}'))
    assert chat.messages[0]["content"].encode("utf-8") == b"a?"


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b'{"a": 1}', None), (b"{nope", "invalid_json"), (b"\xff\xfe\xfd", "invalid_json"), (b"", "invalid_json")],
)
def test_decode_json_body(raw: bytes, code: str | None) -> None:
    """A body that is not JSON (or not UTF-8) is a 400 invalid_json."""
    if code is None:
        assert decode_json_body(raw) == {"a": 1}
        return
    with pytest.raises(APIError) as info:
        decode_json_body(raw)
    assert (info.value.status, info.value.error["code"]) == (400, code)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, b'{"error": {"message": "bad key", "type": "auth", "param": null, "code": "invalid_api_key"}}',
         (401, "bad key", "auth", "invalid_api_key")),
        (404, b"not json", (404, "upstream answered 404", "invalid_request_error", None)),
        (500, b'{"error": {"message": "on fire"}}', (502, "upstream answered 500: on fire", "upstream_error",
                                                     "upstream_status_500")),
        (503, b'{"error": "a string"}', (502, "upstream answered 503", "upstream_error", "upstream_status_503")),
    ],
)
def test_upstream_error(status: int, body: bytes, expected: tuple[Any, ...]) -> None:
    """An upstream's 4xx is passed on as it said it; its 5xx becomes our 502 naming the status."""
    e = upstream_error(status, body)
    assert (e.status, e.error["message"], e.error["type"], e.error["code"]) == expected


def test_api_error_body() -> None:
    """The error body is OpenAI's shape: exactly message, type, param and code under "error"."""
    e = APIError(429, "slow down", "rate_limit_error", None, "too_many")
    assert e.body() == {"error": {"message": "slow down", "type": "rate_limit_error", "param": None,
                                  "code": "too_many"}}


def test_chunks_of_a_stream() -> None:
    """A role chunk, one chunk per token, a finish chunk, then [DONE]; every chunk is valid JSON sharing an id."""
    enc = ChunkEncoder("chatcmpl-1", 7, 'a "model"', include_usage=False)
    wire = enc.token("Hel") + enc.token('lo "x"\n') + enc.finish("stop", {"total_tokens": 3})
    assert wire.endswith(DONE)
    chunks = [json.loads(d) for d in data_events(wire[: -len(DONE)])]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None}, {"content": "Hel"}, {"content": 'lo "x"\n'}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-1", 7, 'a "model"', "chat.completion.chunk")}
    assert all("usage" not in c for c in chunks)


def test_chunks_with_usage() -> None:
    """include_usage: every chunk says "usage": null and a last chunk with no choices carries the usage."""
    enc = ChunkEncoder("chatcmpl-2", 7, "m", include_usage=True)
    wire = enc.token("a") + enc.finish("length", {"total_tokens": 1})
    chunks = [json.loads(d) for d in data_events(wire[: -len(DONE)])]
    assert [c["usage"] for c in chunks] == [None, None, None, {"total_tokens": 1}]
    assert chunks[-1]["choices"] == [] and chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_completion_and_model_objects() -> None:
    """A whole completion and a model entry carry the fields the SDKs read."""
    obj = completion_object("chatcmpl-3", 9, "m", "text", "stop", {"total_tokens": 1})
    assert obj["object"] == "chat.completion" and obj["choices"][0]["message"] == {
        "role": "assistant", "content": "text", "refusal": None}
    assert obj["choices"][0]["finish_reason"] == "stop" and obj["usage"] == {"total_tokens": 1}
    assert model_object("m", 5) == {"id": "m", "object": "model", "created": 5, "owned_by": "sse_server"}


def test_completion_ids_are_fresh() -> None:
    """Completion ids look like the API's and do not repeat."""
    ids = {completion_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("chatcmpl-") and len(i) == 33 for i in ids)


def test_api_error_fields_always_encode() -> None:
    """An APIError quoting a lone surrogate (in its message, param or code) still encodes as UTF-8."""
    error = APIError(404, "The model '\ud800' does not exist", param="model\udc00", code="c\ud800")
    assert error.body()["error"] == {"message": "The model '?' does not exist", "type": "invalid_request_error",
                                     "param": "model?", "code": "c?"}
    json.dumps(error.body(), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("value", [10 ** 5_000, -(10 ** 5_000), 1 << 65],
                         ids=["5001-digits", "minus-5001-digits", "2**65"])
def test_huge_integer_fields_are_out_of_range_unquoted(value: int) -> None:
    """An integer past any bound is out_of_range without quoting it (str() refuses ints past 4,300 digits)."""
    with pytest.raises(APIError) as info:
        parse_chat_request({"model": "m", "messages": MESSAGES, "max_tokens": value})
    assert info.value.body() == out_of_range("max_tokens", 1, 1 << 30).body()
    assert info.value.status == 400 and info.value.error["code"] == "invalid_value"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"[" * 200_000 + b"]" * 200_000, "nested too deeply"), (b'{"n": ' + b"9" * 5_000 + b"}", "too many digits"),
     (b'{"t": 1e999}', "too large"), (b'{"t": NaN}', "NaN")],
)
def test_decode_json_body_refuses_hostile_json(raw: bytes, reason: str) -> None:
    """Deep nesting, 5,000-digit numbers and non-finite numbers are a 400 invalid_json, never a crash."""
    with pytest.raises(APIError) as info:
        decode_json_body(raw)
    assert info.value.status == 400 and info.value.error["code"] == "invalid_json"
    assert reason in info.value.error["message"]


def test_decode_json_body_replaces_lone_surrogates() -> None:
    """A lone surrogate anywhere in a chat body becomes '?' as it is loaded."""
    assert decode_json_body(b'{"model": "\\ud800", "stop": ["\\udfff"]}') == {"model": "?", "stop": ["?"]}


def test_upstream_error_fields_that_are_not_strings_pass_through() -> None:
    """An upstream 4xx whose type, param or code is not a string is relayed as it said it."""
    error = upstream_error(400, b'{"error": {"message": "m\\ud800", "type": 7, "param": ["p"], "code": null}}')
    assert error.error == {"message": "m?", "type": 7, "param": ["p"], "code": None}
