"""ChatUser: streamed chat completions, as an OpenAI-compatible SDK would ask for them.

POST /v1/chat/completions with "stream": true, then read ``data: {chunk}`` events
until ``data: [DONE]``. Reports (request type CHAT):
  time to first token  request sent until the first chunk with non-empty delta.content
  total                request sent until [DONE]; the failures of a chat land here
  tokens/s             NOT milliseconds: the rate after the first token,
                       (tokens - 1) / (last token - first token), shown in the
                       response-time columns because Locust has no others
The model is --chat-model, or the first one GET /v1/models lists. When the server
has no chat route, every chat is a failure that says so.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from locust import task

from sse_server.sse import EventStreamError, EventStreamParser

from .common import CHAT, RequestUser, ms_since, report
from .wire import Connection, HTTPFailure

__all__ = ["ChatUser"]

TOKENS_PER_S = "tokens/s (a rate, not ms)"
MAX_ERROR_BODY_BYTES = 64 * 1024  # enough for an error object; more is not worth reading
PROMPTS = (
    "Explain server-sent events in two sentences.",
    "Why do proxies buffer streamed responses?",
    "Summarise how Last-Event-ID resumption works.",
    "Write a haiku about backpressure.",
    "What does a heartbeat comment protect against?",
)

_models: dict[tuple[str, int], str] = {}  # (host, port) -> model id, found once per process


class ChatFailure(Exception):
    """The chat endpoint answered, but not with a complete streamed completion."""


class ChatUser(RequestUser):
    weight = 1
    think_option = "chat_think_s"

    def on_start(self) -> None:
        super().on_start()
        options = self.environment.parsed_options
        self.max_tokens = options.chat_max_tokens if options else 64
        self.model = (options.chat_model if options else "") or None

    def _find_model(self) -> str | None:
        key = (self.host_name, self.port)
        if key not in _models:
            start = time.perf_counter()
            try:
                _, head = self.conn.exchange("GET", "/v1/models", [("Accept", "application/json")])
                body = _read_all(self.conn, head)
                if head.status == 404:
                    raise ChatFailure("no chat model on this server: GET /v1/models answered 404")
                if head.status != 200:
                    raise ChatFailure(f"GET /v1/models answered {head.status}")
                listed = json.loads(body).get("data") or []
                if not listed or not isinstance(listed[0].get("id"), str):
                    raise ChatFailure("GET /v1/models listed no model")
            except (OSError, HTTPFailure, ChatFailure, ValueError, AttributeError) as e:
                self.conn.close()
                report(self.environment, CHAT, "models", ms_since(start), exception=e)
                return None
            report(self.environment, CHAT, "models", ms_since(start), len(body))
            _models[key] = listed[0]["id"]
        return _models[key]

    @task
    def chat(self) -> None:
        model = self.model or self._find_model()
        if model is None:
            return
        request: dict[str, Any] = {
            "model": model,
            "stream": True,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
        }
        body = json.dumps(request).encode()
        headers = [("Content-Type", "application/json"), ("Accept", "text/event-stream")]
        start = time.perf_counter()
        length = 0
        try:
            start, head = self.conn.exchange("POST", "/v1/chat/completions", headers, body)
            if head.status != 200:
                detail = _error_message(_read_all(self.conn, head))
                if head.status == 404:
                    raise ChatFailure("no chat route: POST /v1/chat/completions answered 404")
                raise ChatFailure(f"status {head.status}: {detail}")
            tokens, first_s, last_s, done = 0, 0.0, 0.0, False
            parser = EventStreamParser(max_event_chars=MAX_ERROR_BODY_BYTES)
            for piece in self.conn.body(head):
                length += len(piece)
                for event in parser.feed(piece):
                    if event.data == "[DONE]":
                        done = True
                        continue
                    if done:
                        raise ChatFailure("data after [DONE]")
                    n = _count_content(json.loads(event.data))
                    if n:
                        last_s = time.perf_counter()
                        if not tokens:
                            first_s = last_s
                        tokens += n
            end = time.perf_counter()
            if not done:
                raise ChatFailure("stream ended without data: [DONE]")
            if not tokens:
                raise ChatFailure("a completion with no content")
        except (OSError, HTTPFailure, EventStreamError, ChatFailure, ValueError) as e:
            self.conn.close()
            report(self.environment, CHAT, "total", ms_since(start), length, exception=e)
            return
        if not self.conn.reusable:
            self.conn.close()
        env = self.environment
        report(env, CHAT, "time to first token", ms_since(start, first_s), length)
        report(env, CHAT, "total", ms_since(start, end), length)
        if tokens > 1 and last_s > first_s:
            report(env, CHAT, TOKENS_PER_S, (tokens - 1) / (last_s - first_s), length)


def _count_content(chunk: object) -> int:
    """How many non-empty delta.content pieces a chunk carries (an error chunk raises)."""
    if not isinstance(chunk, dict):
        raise ChatFailure("a chunk that is not a JSON object")
    if "error" in chunk:
        raise ChatFailure(f"error chunk: {_error_message(json.dumps(chunk).encode())}")
    count = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and delta.get("content"):
            count += 1
    return count


def _read_all(conn: Connection, head: Any) -> bytes:
    parts, size = [], 0
    for piece in conn.body(head):
        parts.append(piece)
        size += len(piece)
        if size > MAX_ERROR_BODY_BYTES:
            conn.close()
            break
    return b"".join(parts)


def _error_message(body: bytes) -> str:
    """The message of an OpenAI-style error object, else the body's start (kept short:
    Locust groups failures by their text)."""
    try:
        error = json.loads(body).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:200]
    except (ValueError, AttributeError):
        pass
    return body[:200].decode("utf-8", "replace")
