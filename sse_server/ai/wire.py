"""The OpenAI chat completions wire format: requests in, JSON values and text out.

Pure: no asyncio, no sockets, no clock (callers pass ids and times in). What the
API accepts is decided here once (``parse_chat_request``), errors carry the API's
error object (``APIError``), and every object the API answers with is built here:
completions, streamed chunks, model entries. The asyncio layers (generation.py,
routes.py) only move these values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..untrusted import BadJSON, load_json, utf8_safe

if TYPE_CHECKING:
    from .upstream import UpstreamError

__all__ = [
    "DONE",
    "MAX_CHAT_BODY_BYTES",
    "MAX_MESSAGES",
    "MAX_TOKENS",
    "MAX_UPSTREAM_ERROR_BYTES",
    "SYSTEM_FINGERPRINT",
    "APIError",
    "ChatRequest",
    "ChunkEncoder",
    "completion_id",
    "completion_object",
    "decode_json_body",
    "dumps",
    "missing_parameter",
    "model_object",
    "out_of_range",
    "parse_chat_request",
    "request_too_large",
    "upstream_error",
    "utf8_safe",
]

# A chat body is JSON text; half a MiB holds a long conversation. Past it we answer
# OpenAI's 413 shape (a body past --max-body-bytes gets the server's plain 413 first).
MAX_CHAT_BODY_BYTES = 512 * 1024
MAX_MESSAGES = 2_048  # bounds the per-request work of hashing and tokenizing a prompt
MAX_TOKENS = 1 << 30  # the largest max_tokens / max_completion_tokens we accept
SYSTEM_FINGERPRINT = "fp_sse_mock"
DONE = "data: [DONE]\n\n"  # the stream's last event; the SDKs stop reading on it
MAX_UPSTREAM_ERROR_BYTES = 64 * 1024  # an upstream's error body: only its message is kept

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def dumps(value: object) -> str:
    """Compact JSON, non-ASCII kept as is: the bytes every response of this API uses."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def completion_id() -> str:
    """A fresh ``chatcmpl-...`` id: 96 random bits, never reused."""
    return "chatcmpl-" + os.urandom(12).hex()


# -- errors in OpenAI's shape ----------------------------------------------------------


class APIError(Exception):
    """A request we answer with OpenAI's error body ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.headers = headers or []  # e.g. Retry-After on a 429
        # Every field may quote the client or an upstream (whose fields may not even be
        # strings): no string in it may hold what UTF-8 cannot carry.
        message = _encodable(message)
        super().__init__(message)
        self.status = status
        self.error = {"message": message, "type": _encodable(type), "param": _encodable(param),
                      "code": _encodable(code)}

    @classmethod
    def from_upstream(cls, e: UpstreamError) -> APIError:
        return cls(e.status, str(e), "upstream_error", None, e.code)

    def body(self) -> dict[str, Any]:
        """The JSON body to answer with, under ``self.status``."""
        return {"error": self.error}


def _encodable(value: Any) -> Any:
    return utf8_safe(value) if isinstance(value, str) else value


def missing_parameter(param: str) -> APIError:
    return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}


def _wrong_type(param: str, expected: str, value: object) -> APIError:
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    return APIError(400, f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
                    param=param, code="invalid_type")


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def out_of_range(param: str, lo: int, hi: int) -> APIError:
    """400 for an integer parameter outside ``lo..hi`` (its value is not quoted: it may be huge)."""
    return _invalid(param, f"Invalid '{param}': out of range; expected {lo} to {hi}.")


def request_too_large(limit_bytes: int) -> APIError:
    return APIError(413, f"Request body too large: the limit is {limit_bytes} bytes.",
                    param=None, code="request_too_large")


def decode_json_body(raw: bytes) -> object:
    """The body's JSON value, or APIError 400 ``invalid_json``.

    A lone surrogate in a string (``"\\ud800"``) becomes ``?``: a prompt holding one
    still gets an answer, and a model name holding one is echoed safely in its 404.
    """
    try:
        return load_json(raw, surrogates="replace")
    except BadJSON as e:
        raise APIError(400, f"We could not parse the JSON body of your request: {e}", code="invalid_json") from None


def upstream_error(status: int, body: bytes) -> APIError:
    """Our error for an upstream's non-200 answer: its 4xx as it said it, 5xx as a 502."""
    detail: dict[str, Any] = {}
    try:
        parsed = load_json(body, surrogates="replace")
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            detail = parsed["error"]
    except BadJSON:
        pass  # not OpenAI's error shape: the status alone says what happened
    message = detail.get("message") if isinstance(detail.get("message"), str) else ""
    if 400 <= status < 500:
        return APIError(status, message or f"upstream answered {status}",
                        detail.get("type") or "invalid_request_error", detail.get("param"), detail.get("code"))
    return APIError(502, f"upstream answered {status}" + (f": {message}" if message else ""),
                    "upstream_error", None, f"upstream_status_{status}")


# -- the request -------------------------------------------------------------------------


@dataclass(slots=True)
class ChatRequest:
    model: str | None
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None


def _content_text(content: object, param: str) -> str:
    """A message's text: a string, or the text parts of a content-part array."""
    if content is None or isinstance(content, str):
        return utf8_safe(content or "")
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise _wrong_type(f"{param}[{i}]", "an object", part)
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise _wrong_type(f"{param}[{i}].text", "a string", text)
                texts.append(text)
        return utf8_safe("\n".join(texts))
    raise _wrong_type(param, "a string or an array of content parts", content)


def _int_field(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(name, "an integer", value)
    if not lo <= value <= hi:
        if value.bit_length() > 64:  # not quoted: str() refuses ints past 4,300 digits
            raise out_of_range(name, lo, hi)
        raise _invalid(name, f"Invalid '{name}': {value} is out of range; expected {lo} to {hi}.")
    return value


def parse_chat_request(body: object, *, require_model: bool = True) -> ChatRequest:
    """Validate a chat completion body the way the OpenAI API does; raise APIError.

    >>> parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).messages
    [{'role': 'user', 'content': 'hi'}]
    """
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_type")
    model = body.get("model")
    if model is None:
        if require_model:
            raise missing_parameter("model")
    elif not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    if "messages" not in body:
        raise missing_parameter("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        raise _invalid("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.")
    if len(messages) > MAX_MESSAGES:
        raise _invalid("messages", f"Invalid 'messages': more than {MAX_MESSAGES} messages.")
    normalized = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _wrong_type(param, "an object", message)
        role = message.get("role")
        if role is None:
            raise missing_parameter(f"{param}.role")
        if not isinstance(role, str):
            raise _wrong_type(f"{param}.role", "a string", role)
        if role not in _ROLES:
            raise _invalid(f"{param}.role", f"Invalid value: '{role[:40]}'. Supported values are: "
                           + ", ".join(f"'{r}'" for r in sorted(_ROLES)) + ".")
        if "content" not in message and role != "assistant":
            raise missing_parameter(f"{param}.content")
        normalized.append({"role": role, "content": _content_text(message.get("content"), f"{param}.content")})
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _wrong_type("stream_options", "an object", options)
        if not stream:
            raise _invalid("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise _wrong_type("stream_options.include_usage", "a boolean", include_usage)
    max_tokens = _int_field(body, "max_completion_tokens", 1, MAX_TOKENS)
    legacy = _int_field(body, "max_tokens", 1, MAX_TOKENS)
    n = _int_field(body, "n", 1, 128)
    if n not in (None, 1):
        raise _invalid("n", "Invalid 'n': this server generates one choice per request.")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _wrong_type(name, "a number", value)
    return ChatRequest(model, normalized, stream, include_usage, max_tokens if max_tokens is not None else legacy)


# -- what the API answers with -------------------------------------------------------------


def completion_object(
    id: str, created: int, model: str, content: str, finish_reason: str, usage: dict[str, Any],
) -> dict[str, Any]:
    """A whole ``chat.completion`` (``"stream": false``)."""
    return {
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


def model_object(name: str, created: int) -> dict[str, Any]:
    """One entry of ``GET /v1/models``."""
    return {"id": name, "object": "model", "created": created, "owned_by": "sse_server"}


class ChunkEncoder:
    """The ``data:`` events of one streamed completion, as text.

    Every chunk of a stream shares its id, created time and model, so the JSON
    around the token is built once: a token costs one ``dumps`` of its text and two
    concatenations. The first token is preceded by the chunk that carries the role.

    >>> enc = ChunkEncoder("chatcmpl-1", 7, "m", include_usage=False)
    >>> enc.token("Hi").count("data: ")
    2
    """

    __slots__ = ("_first", "_head", "_include_usage", "_prefix", "_suffix")

    def __init__(self, id: str, created: int, model: str, include_usage: bool) -> None:
        usage = ',"usage":null' if include_usage else ""
        head = (f'{{"id":"{id}","object":"chat.completion.chunk","created":{created},'
                f'"model":{dumps(model)},"system_fingerprint":"{SYSTEM_FINGERPRINT}",'
                '"choices":[{"index":0,"delta":')
        self._head = head
        self._prefix = "data: " + head + '{"content":'
        self._suffix = '},"logprobs":null,"finish_reason":null}]' + usage + "}\n\n"
        self._first = True
        self._include_usage = include_usage

    def token(self, text: str) -> str:
        wire = self._prefix + dumps(text) + self._suffix
        if self._first:
            self._first = False
            # The role object closes its own brace, hence the suffix without its first "}".
            role = ("data: " + self._head + '{"role":"assistant","content":"","refusal":null}'
                    + self._suffix[1:])
            wire = role + wire
        return wire

    def finish(self, reason: str, usage: dict[str, Any] | None) -> str:
        """The chunk with ``finish_reason``, the usage chunk if asked for, then [DONE]."""
        usage_null = ',"usage":null' if self._include_usage else ""
        wire = ("data: " + self._head + '{},"logprobs":null,"finish_reason":' + dumps(reason) + "}]"
                + usage_null + "}\n\n")
        if self._include_usage and usage is not None:
            head = self._head[: self._head.index('"choices"')]
            wire += "data: " + head + '"choices":[],"usage":' + dumps(usage) + "}\n\n"
        return wire + DONE
