"""The chat model: a deterministic mock behind an OpenAI-compatible API, a relay of
a real upstream, and resumable generations for the chat page.

    app = App()
    install_llm(app)    # the routes below; Config.upstream_url switches mock -> relay

Routes:
  POST   /v1/chat/completions      OpenAI chat completions, ``"stream": true`` or not
  GET    /v1/models[/{model}]      the mock model (or the upstream's list)
  GET    /chat/stream?prompt=...   one generation as EventSource events token/done/error
                                   (one-shot: a reconnect with Last-Event-ID gets 204)
  POST   /chat/streams             start a resumable generation and stream it
                                   (``Prefer: respond-async``: 202 with its id instead)
  GET    /chat/streams/{id}        its events after Last-Event-ID (all of them without
                                   one), then live; the response ends after done/error
  POST   /chat/streams/{id}/cancel, DELETE /chat/streams/{id}   stop it

Strategy. A generation is a *run* (MockRun or RelayRun) that calls a *listener*:
``token(text, raw)`` per piece, then ``finish(reason, usage)`` or ``fail(error)``.
Listeners write the wire format straight into a response (an OpenAI chunk stream,
named events) or publish to a broker channel (resumable jobs), so one run type
serves every endpoint. Mock runs own no task: one shared Pacer timer per loop
walks a heap of due tokens and writes each into its sink, so 1,000 paced streams
cost a timer wake-up every couple of milliseconds, not 1,000 sleeping tasks.
A relay run is one task reading the upstream; cancelling it aborts the upstream
socket. Errors after the head has gone out become a last error event, never a
hung or silently truncated stream.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from .app import App, JSONResponse, Request, Response, Sink
from .channels import MemoryEngine
from .sse.streams import ChannelStream, EventStream, last_event_id_of
from .sse import EventStreamError, EventStreamParser, encode_event
from .mockmodel import MockCompletion, mock_complete
from .upstream import Endpoint, UpstreamError, UpstreamResponse
from .upstream import request as upstream_request

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "MOCK_MODEL",
    "APIError",
    "ChatRequest",
    "ChatService",
    "Job",
    "Pacer",
    "install_llm",
    "parse_chat_request",
]

log = logging.getLogger("sse_server")

MOCK_MODEL = "sse-mock-1"
MOCK_CREATED = 1_700_000_000  # the model's fixed "created" date in /v1/models

# A chat body is JSON text; half a MiB holds a long conversation. Past it we answer
# OpenAI's 413 shape (a body past --max-body-bytes gets the server's plain 413 first).
MAX_CHAT_BODY_BYTES = 512 * 1024
MAX_MESSAGES = 2_048  # bounds the per-request work of hashing and tokenizing a prompt
MAX_UPSTREAM_EVENT_CHARS = 1024 * 1024  # one upstream event may not pin more memory than this
MAX_UPSTREAM_BODY_BYTES = 16 * 1024 * 1024  # a non-streamed upstream answer
# Every event of a job stays in its channel's history so a resume can replay it;
# this bounds one job's memory (the job ends with finish_reason "length" there).
MAX_JOB_EVENTS = 4_096
DEFAULT_MAX_JOBS = 1_000  # running + finished jobs kept; bounds memory with the line above
DEFAULT_JOB_IDLE_CANCEL_S = 30.0  # a job nobody has watched for this long is cancelled
DEFAULT_JOB_RETENTION_S = 300.0  # a finished job can be resumed (replayed) this long

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"message": message, "type": type, "param": param, "code": code}

    @classmethod
    def from_upstream(cls, e: UpstreamError) -> APIError:
        return cls(e.status, str(e), "upstream_error", None, e.code)

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error}, status=self.status)


def _missing(param: str) -> APIError:
    return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}


def _wrong_type(param: str, expected: str, value: object) -> APIError:
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    return APIError(400, f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
                    param=param, code="invalid_type")


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


# -- the request -------------------------------------------------------------------------


@dataclass(slots=True)
class ChatRequest:
    model: str | None
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None


def _utf8_safe(text: str) -> str:
    """``text`` without lone surrogates (JSON's "\\ud800" decodes to one; UTF-8 cannot carry it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _content_text(content: object, param: str) -> str:
    """A message's text: a string, or the text parts of a content-part array."""
    if content is None or isinstance(content, str):
        return _utf8_safe(content or "")
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
        return _utf8_safe("\n".join(texts))
    raise _wrong_type(param, "a string or an array of content parts", content)


def _int_field(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(name, "an integer", value)
    if not lo <= value <= hi:
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
            raise _missing("model")
    elif not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    if "messages" not in body:
        raise _missing("messages")
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
            raise _missing(f"{param}.role")
        if not isinstance(role, str):
            raise _wrong_type(f"{param}.role", "a string", role)
        if role not in _ROLES:
            raise _invalid(f"{param}.role", f"Invalid value: '{role[:40]}'. Supported values are: "
                           + ", ".join(f"'{r}'" for r in sorted(_ROLES)) + ".")
        if "content" not in message and role != "assistant":
            raise _missing(f"{param}.content")
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
    max_tokens = _int_field(body, "max_completion_tokens", 1, 1 << 30)
    legacy = _int_field(body, "max_tokens", 1, 1 << 30)
    n = _int_field(body, "n", 1, 128)
    if n not in (None, 1):
        raise _invalid("n", "Invalid 'n': this server generates one choice per request.")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _wrong_type(name, "a number", value)
    return ChatRequest(model, normalized, stream, include_usage, max_tokens if max_tokens is not None else legacy)


def _completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- runs and listeners ------------------------------------------------------------------


class Listener(Protocol):
    """Where a run delivers a generation. Every method is called on the loop."""

    def token(self, text: str, raw: str | None) -> None:
        """A piece of the answer; ``raw`` is the upstream chunk's JSON when relaying."""

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None: ...

    def fail(self, error: dict[str, Any]) -> None:
        """The generation failed; ``error`` is an OpenAI error object."""

    async def writable(self) -> None:
        """Wait while the consumer is behind (relay backpressure)."""


class Run(Protocol):
    done: asyncio.Future[None]

    def cancel(self) -> None: ...


@dataclass(slots=True)
class Stats:
    """Counters tests and benchmarks read from ``app.state["llm"].stats``."""

    started: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0  # stopped before the end: client gone, stop button, idle job


class Pacer:
    """One timer for every paced mock generation on a loop.

    Runs sit in a heap by the time their next token is due. Each wake-up emits every
    token due within half a quantum, then sleeps until the next due time but at least
    one quantum: wake-ups stay bounded however many streams are live, and no token is
    later than about a quantum. Due times are absolute (first token + i / rate), so
    delays never accumulate.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, quantum_s: float = 0.002) -> None:
        self.loop = loop
        self.quantum_s = quantum_s
        self._heap: list[tuple[float, int, MockRun]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def schedule(self, run: MockRun, at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), run))
        self._arm(at)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            if at >= self._timer_at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap = self._heap
        now = self.loop.time()
        horizon = now + self.quantum_s / 2
        try:
            while heap and heap[0][0] <= horizon:
                _, _, run = heapq.heappop(heap)
                if run.finished:
                    continue  # cancelled: dropped lazily here
                try:
                    due = run.step(now)
                except Exception:
                    log.exception("mock generation failed; ending it")
                    run.fail_internal()
                    continue
                if due is not None:
                    heapq.heappush(heap, (due, next(self._seq), run))
        finally:  # whatever one run did, the others keep their timer
            if heap:
                self._arm(max(heap[0][0], now + self.quantum_s))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
        self._heap.clear()


class MockRun:
    """A mock generation driven by the Pacer: no task of its own."""

    __slots__ = ("completion", "done", "finished", "i", "interval_s", "listener", "stats", "t0")

    def __init__(
        self, pacer: Pacer, listener: Listener, completion: MockCompletion,
        first_token_s: float, interval_s: float, stats: Stats,
    ) -> None:
        self.listener = listener
        self.completion = completion
        self.i = 0
        self.t0 = pacer.loop.time() + first_token_s
        self.interval_s = interval_s
        self.finished = False
        self.done: asyncio.Future[None] = pacer.loop.create_future()
        self.stats = stats
        stats.started += 1
        pacer.schedule(self, self.t0)

    def step(self, now: float) -> float | None:
        """Emit the token due now; return when the next one is due (None: finished)."""
        tokens = self.completion.tokens
        self.listener.token(tokens[self.i], None)
        self.i += 1
        if self.finished:
            return None  # the listener stopped us (a job's history is full)
        if self.i < len(tokens):
            return self.t0 + self.i * self.interval_s
        self._end()
        self.stats.finished += 1
        self.listener.finish(self.completion.finish_reason, self.completion.usage)
        return None

    def _end(self) -> None:
        self.finished = True
        if not self.done.done():
            self.done.set_result(None)

    def fail_internal(self) -> None:
        self._end()
        self.stats.failed += 1
        try:
            self.listener.fail({"message": "the model failed", "type": "server_error", "param": None, "code": None})
        except Exception:
            log.exception("could not tell the client its generation failed")

    def cancel(self) -> None:
        if not self.finished:
            self._end()
            self.stats.cancelled += 1


def _upstream_error_object(status: int, body: bytes) -> APIError:
    """Our error for an upstream's non-200 answer: its 4xx as it said it, 5xx as a 502."""
    detail: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            detail = parsed["error"]
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    message = detail.get("message") if isinstance(detail.get("message"), str) else ""
    if 400 <= status < 500:
        return APIError(status, message or f"upstream answered {status}",
                        detail.get("type") or "invalid_request_error", detail.get("param"), detail.get("code"))
    return APIError(502, f"upstream answered {status}" + (f": {message}" if message else ""),
                    "upstream_error", None, f"upstream_status_{status}")


class RelayRun:
    """A generation relayed from an upstream chat completions stream: one task."""

    __slots__ = ("body", "done", "finished", "listener", "response", "service", "task")

    def __init__(self, service: ChatService, listener: Listener, body: bytes,
                 response: UpstreamResponse | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.service = service
        self.listener = listener
        self.body = body
        self.response = response  # already open (the /v1 handler waited for its head) or None
        self.finished = False
        self.done: asyncio.Future[None] = loop.create_future()
        service.stats.started += 1
        self.task = loop.create_task(self._run())

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self.service.stats.cancelled += 1
            self.task.cancel()
            if self.response is not None:
                self.response.close()  # at once, not on the task's next turn
            if not self.done.done():
                self.done.set_result(None)

    def _fail(self, error: APIError) -> None:
        if self.finished:
            return
        self.finished = True
        self.service.stats.failed += 1
        log.warning("upstream generation failed: %s", error.error["message"])
        self.listener.fail(error.error)

    async def _run(self) -> None:
        try:
            await self._relay()
        except UpstreamError as e:
            self._fail(APIError.from_upstream(e))
        except APIError as e:
            self._fail(e)
        except Exception:  # a bug here must still end the client's stream with an error
            log.exception("relay failed")
            self._fail(APIError(500, "the relay failed", "server_error"))
        finally:
            if self.response is not None:
                self.response.close()
            if not self.done.done():
                self.done.set_result(None)

    async def _relay(self) -> None:
        if self.response is None:
            self.response = await self.service.open_upstream("/chat/completions", self.body)
        response = self.response
        if response.status != 200:
            raise _upstream_error_object(response.status, await response.read_all(64 * 1024))
        parser = EventStreamParser(max_event_chars=MAX_UPSTREAM_EVENT_CHARS)
        listener = self.listener
        finish: str | None = None
        usage: dict[str, Any] | None = None
        while piece := await response.read():
            try:
                events = parser.feed(piece)
            except EventStreamError as e:
                raise UpstreamError(str(e), code="upstream_bad_response") from None
            for event in events:
                data = event.data
                if data == "[DONE]":
                    self.finished = True
                    self.service.stats.finished += 1
                    listener.finish(finish or "stop", usage)
                    return
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    raise UpstreamError("upstream sent an event that is not JSON",
                                        code="upstream_bad_response") from None
                if not isinstance(chunk, dict):
                    raise UpstreamError("upstream sent an event that is not a JSON object",
                                        code="upstream_bad_response")
                if isinstance(chunk.get("error"), dict):
                    err = chunk["error"]
                    raise APIError(502, str(err.get("message") or "upstream failed mid-stream"),
                                   "upstream_error", None, str(err.get("code") or "upstream_stream_error"))
                text = ""
                for choice in chunk.get("choices") or ():
                    if isinstance(choice, dict) and choice.get("index", 0) == 0:
                        delta = choice.get("delta")
                        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                            text = _utf8_safe(delta["content"])
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                listener.token(text, data)
            await listener.writable()
        raise UpstreamError("upstream ended the stream before [DONE]", code="upstream_closed")


# -- listeners that write a response -------------------------------------------------------


class GenerationStream(EventStream):
    """An SSE response written by a run's listener callbacks.

    It is an EventStream whose source yields nothing: EventStream supplies the
    ``retry:`` line and heartbeats and sets ``self.sink`` before iterating the source,
    and the listener methods write into that sink directly (no task wake-up per
    token). The connection cancels the source when the client leaves; that cancels
    the run.
    """

    __slots__ = ("_loop", "_start", "run")

    def __init__(self, start: Callable[[Listener], Run], *, retry_ms: int | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(self._follow(), retry_ms=retry_ms, headers=headers or ())
        self._start = start
        self.run: Run | None = None
        self._loop = asyncio.get_running_loop()

    async def _follow(self) -> AsyncIterator[bytes]:
        self.run = run = self._start(self)
        try:
            await run.done
        finally:
            run.cancel()  # a no-op once it has finished
        return
        yield  # an async generator that yields nothing

    def token(self, text: str, raw: str | None) -> None:
        raise NotImplementedError

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def fail(self, error: dict[str, Any]) -> None:
        raise NotImplementedError

    def _emit(self, wire: bytes) -> None:
        sink = self.sink
        if sink.is_closing():
            return  # the connection notices and cancels us
        sink.write(wire)
        self.last_write = self._loop.time()
        if sink.buffered_bytes() > sink.config.max_subscriber_buffer_bytes:
            # A client this far behind a paced stream is gone in practice; like a slow
            # broker subscriber it is dropped rather than buffered without bound.
            sink.abort()

    async def on_shutdown(self, sink: Sink) -> None:
        """The server is stopping: say so rather than end the answer silently."""
        run = self.run
        if run is not None and not run.done.done():
            self.fail({"message": "the server is shutting down", "type": "server_error", "param": None,
                       "code": "server_shutdown"})
            run.cancel()

    async def writable(self) -> None:
        if not self.sink.is_closing():
            try:
                await self.sink.drain()
            except ConnectionError:
                pass  # the connection cancels us on its next turn


class CompletionStream(GenerationStream):
    """``/v1/chat/completions`` with ``"stream": true``: OpenAI chunk objects, then [DONE].

    For the mock, each chunk is a precomputed JSON prefix + the token as a JSON
    string + a suffix. For a relay, the upstream's chunks pass through verbatim.
    """

    __slots__ = ("_first", "_head", "_include_usage", "_prefix", "_suffix")

    def __init__(self, start: Callable[[Listener], Run], model: str, include_usage: bool) -> None:
        super().__init__(start, retry_ms=-1)
        usage = ',"usage":null' if include_usage else ""
        head = (f'{{"id":"{_completion_id()}","object":"chat.completion.chunk","created":{int(time.time())},'
                f'"model":{_json(model)},"system_fingerprint":"fp_sse_mock","choices":[{{"index":0,"delta":')
        self._head = head
        self._prefix = "data: " + head + '{"content":'
        self._suffix = '},"logprobs":null,"finish_reason":null}]' + usage + "}\n\n"
        self._first = True
        self._include_usage = include_usage

    def token(self, text: str, raw: str | None) -> None:
        if raw is not None:
            self._emit(encode_event(raw))
            return
        wire = self._prefix + _json(text) + self._suffix
        if self._first:
            self._first = False
            role = ("data: " + self._head + '{"role":"assistant","content":"","refusal":null}'
                    + self._suffix[1:])
            wire = role + wire
        self._emit(wire.encode())

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None:
        if isinstance(self.run, RelayRun):
            self._emit(b"data: [DONE]\n\n")
            return
        usage_null = ',"usage":null' if self._include_usage else ""
        wire = ("data: " + self._head + '{},"logprobs":null,"finish_reason":' + _json(reason) + "}]"
                + usage_null + "}\n\n")
        if self._include_usage and usage is not None:
            head = self._head[: self._head.index('"choices"')]
            wire += "data: " + head + '"choices":[],"usage":' + _json(usage) + "}\n\n"
        self._emit((wire + "data: [DONE]\n\n").encode())

    def fail(self, error: dict[str, Any]) -> None:
        # What the OpenAI API sends when a stream fails; its SDK raises APIError on it.
        self._emit(encode_event(_json({"error": error})))


class NamedEventStream(GenerationStream):
    """``GET /chat/stream``: events ``token`` {"content"}, then ``done`` or ``error``.

    Events carry ids (1, 2, ...) only so that an EventSource reconnecting to this
    one-shot stream sends Last-Event-ID: the handler answers that with 204, which
    stops EventSource (WHATWG HTML §9.2.3) instead of starting the answer over.
    """

    __slots__ = ("_seq",)

    def __init__(self, start: Callable[[Listener], Run]) -> None:
        super().__init__(start)
        self._seq = 0

    def _event(self, event: str, payload: dict[str, Any]) -> None:
        self._seq += 1
        self._emit(encode_event(_json(payload), event=event, id=str(self._seq)))

    def token(self, text: str, raw: str | None) -> None:
        if text:
            self._event("token", {"content": text})

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None:
        self._event("done", {"finish_reason": reason, "usage": usage})

    def fail(self, error: dict[str, Any]) -> None:
        self._event("error", error)


# -- resumable jobs ------------------------------------------------------------------------


@dataclass(eq=False)
class Job:
    """A generation that outlives its connections: its events go to a broker channel.

    Every event keeps the broker's id, so a client that drops resumes with
    Last-Event-ID and gets each token exactly once. The first event is ``start``
    (the job id); the last is ``done`` (finish_reason, usage) or ``error``, after
    which the channel is closed and every subscriber's response ends.
    """

    id: str
    model: str
    service: ChatService
    created: int = field(default_factory=lambda: int(time.time()))
    state: str = "running"  # running, done, cancelled, failed
    run: Run | None = None
    events: int = 0
    unwatched_since: float | None = None
    finished_at: float = 0.0

    @property
    def channel(self) -> str:
        return f"gen:{self.id}"

    @property
    def running(self) -> bool:
        return self.state == "running"

    def _publish(self, event: str, payload: dict[str, Any]) -> None:
        self.events += 1
        self.service.broker.publish_nowait(self.channel, _json(payload), event=event)

    def token(self, text: str, raw: str | None) -> None:
        if not text or not self.running:
            return
        if self.events >= MAX_JOB_EVENTS - 1:
            self.stop("length")
            return
        self._publish("token", {"content": text})

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None:
        self._end("done", "done", {"finish_reason": reason, "usage": usage})

    def fail(self, error: dict[str, Any]) -> None:
        self._end("failed", "error", error)

    async def writable(self) -> None:
        return None  # the broker drops subscribers that fall behind; the job never waits

    def stop(self, reason: str = "cancelled") -> bool:
        """Stop generating (stop button, idle, history full); False if already over."""
        if not self.running:
            return False
        if self.run is not None:
            self.run.cancel()
        self._end("cancelled" if reason == "cancelled" else "done", "done", {"finish_reason": reason, "usage": None})
        return True

    def _end(self, state: str, event: str, payload: dict[str, Any]) -> None:
        if not self.running:
            return
        self.state = state
        self.finished_at = self.service.loop.time()
        self._publish(event, payload)
        self.service.broker.close_channel(self.channel)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.stream", "model": self.model, "created": self.created,
                "state": self.state, "url": f"/chat/streams/{self.id}"}


# -- the service: configuration, routes ------------------------------------------------------


class ChatService:
    """Everything install_llm needs at run time; ``app.state["llm"]`` after start-up."""

    def __init__(self, config: Config, *, max_jobs: int, job_idle_cancel_s: float, job_retention_s: float) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.stats = Stats()
        self.pacer = Pacer(self.loop)
        self.endpoint = Endpoint.parse(config.upstream_url) if config.upstream_url else None
        self.api_key = os.environ.get(config.upstream_key_env) if self.endpoint else None
        if self.endpoint is not None and not self.api_key:
            log.warning("relaying %s without a key: $%s is not set", self.endpoint.url, config.upstream_key_env)
        self.first_token_s = max(config.model_first_token_ms, 0.0) / 1000
        self.interval_s = 1 / config.model_tokens_per_s if config.model_tokens_per_s > 0 else 0.0
        # Generations get a broker of their own: job channels are unreachable through
        # /channels/{name}/events (nobody can inject into someone's answer), and every
        # event of a job fits in its history.
        self.broker = MemoryEngine(MAX_JOB_EVENTS, max_channels=max_jobs + 1)
        self.jobs: dict[str, Job] = {}  # insertion order = age
        self.max_jobs = max_jobs
        self.job_idle_cancel_s = job_idle_cancel_s
        self.job_retention_s = job_retention_s
        self._sweep_s = max(0.05, min(1.0, job_idle_cancel_s / 4, job_retention_s / 4))
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    def close(self) -> None:
        self._sweeper.cancel()
        for job in list(self.jobs.values()):
            job.stop("cancelled")
        self.pacer.close()

    # -- generation sources --------------------------------------------------------------

    def _headers(self, accept: str) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/json"), ("Accept", accept),
                   ("Accept-Encoding", "identity"), ("User-Agent", "sse_server")]
        if self.api_key:
            headers.append(("Authorization", f"Bearer {self.api_key}"))
        return headers

    async def open_upstream(self, path: str, body: bytes | None = None) -> UpstreamResponse:
        assert self.endpoint is not None
        cfg = self.config
        return await upstream_request(
            self.endpoint, "POST" if body is not None else "GET", path, body=body or b"",
            headers=self._headers("text/event-stream" if body is not None else "application/json"),
            connect_timeout_s=cfg.upstream_connect_timeout_s,
            first_byte_timeout_s=cfg.upstream_first_byte_timeout_s,
            idle_timeout_s=cfg.upstream_idle_timeout_s,
        )

    def check_model(self, model: str | None) -> str:
        if self.endpoint is not None:
            if model is None:
                raise _missing("model")
            return model
        if model is None:
            return MOCK_MODEL
        if model != MOCK_MODEL:
            raise APIError(404, f"The model '{model[:100]}' does not exist or you do not have access to it.",
                           param="model", code="model_not_found")
        return model

    def starter(self, chat: ChatRequest, model: str, *, include_usage: bool = True) -> Callable[[Listener], Run]:
        """A function that starts the generation for ``chat`` with a listener."""
        if self.endpoint is None:
            completion = mock_complete(chat.messages, chat.max_tokens)
            return lambda listener: MockRun(self.pacer, listener, completion, self.first_token_s,
                                            self.interval_s, self.stats)
        body: dict[str, Any] = {"model": model, "messages": chat.messages, "stream": True}
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        if chat.max_tokens is not None:
            body["max_completion_tokens"] = chat.max_tokens
        raw = _json(body).encode()
        return lambda listener: RelayRun(self, listener, raw)

    # -- jobs -------------------------------------------------------------------------------

    def start_job(self, chat: ChatRequest, model: str) -> Job:
        if len(self.jobs) >= self.max_jobs and not self._evict_finished_job():
            raise APIError(429, f"{self.max_jobs} generations are running; try again shortly.",
                           "rate_limit_error", None, "too_many_generations")
        job = Job("gen_" + secrets.token_urlsafe(12), model, self)
        self.jobs[job.id] = job
        job._publish("start", {"id": job.id, "model": model, "created": job.created})
        job.run = self.starter(chat, model)(job)
        return job

    def _evict_finished_job(self) -> bool:
        for job in self.jobs.values():
            if not job.running:
                self.forget(job)
                return True
        return False

    def forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        self.broker.remove_channel(job.channel)

    def _sweep(self) -> None:
        """One shared timer: cancel jobs nobody watches, forget old finished ones."""
        now = self.loop.time()
        for job in list(self.jobs.values()):
            if job.running:
                if self.broker.subscriber_count(job.channel):
                    job.unwatched_since = None
                elif job.unwatched_since is None:
                    job.unwatched_since = now
                elif now - job.unwatched_since >= self.job_idle_cancel_s:
                    log.info("cancelling generation %s: nobody watched it for %.0f s", job.id, self.job_idle_cancel_s)
                    job.stop("cancelled")
            elif now - job.finished_at >= self.job_retention_s:
                self.forget(job)
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)


async def _read_chat_body(request: Request) -> tuple[bytes, object]:
    """The body bytes and their JSON, or an APIError in OpenAI's shape."""
    service = request.app.state.get("llm") if request.app is not None else None
    config = service.config if service is not None else None
    limit = min(MAX_CHAT_BODY_BYTES, config.max_body_bytes) if config is not None else MAX_CHAT_BODY_BYTES
    too_big = APIError(413, f"Request body too large: the limit is {limit} bytes.",
                       param=None, code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big  # answered before reading: the connection closes rather than drain it
    raw = await request.body()
    if len(raw) > limit:
        raise too_big
    try:
        return raw, json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"We could not parse the JSON body of your request: {e}", code="invalid_json") from None


async def _job_stream(service: ChatService, request: Request, job: Job) -> ChannelStream:
    """The job's channel: after the request's Last-Event-ID, or from its first event."""
    stream = await ChannelStream.subscribe(request, service.broker, [job.channel], from_start=True)
    stream.headers.append(("Chat-Stream-Id", job.id))
    return stream


def install_llm(
    app: App,
    config: Config,
    *,
    max_jobs: int = DEFAULT_MAX_JOBS,
    job_idle_cancel_s: float = DEFAULT_JOB_IDLE_CANCEL_S,
    job_retention_s: float = DEFAULT_JOB_RETENTION_S,
) -> None:
    """Add the model routes to ``app``; the service is built at start-up from ``app.config``."""
    box: list[ChatService] = []

    async def start() -> None:
        service = ChatService(config, max_jobs=max_jobs, job_idle_cancel_s=job_idle_cancel_s,
                              job_retention_s=job_retention_s)
        box.append(service)
        app.state["llm"] = service

    async def stop() -> None:
        if box:
            box[0].close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)

    def api(handler: Callable[[ChatService, Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Any:
            try:
                return await handler(box[0], request)
            except APIError as e:
                return e.response()

        wrapped.__name__ = handler.__name__
        return wrapped

    # -- /v1 ---------------------------------------------------------------------------

    async def chat_completions(service: ChatService, request: Request) -> Any:
        raw, body = await _read_chat_body(request)
        chat = parse_chat_request(body)
        model = service.check_model(chat.model)
        if service.endpoint is not None:
            return await _relay_completion(service, chat, raw, model)
        completion = mock_complete(chat.messages, chat.max_tokens)
        if chat.stream:
            return CompletionStream(
                lambda listener: MockRun(service.pacer, listener, completion, service.first_token_s,
                                         service.interval_s, service.stats),
                model, chat.include_usage)
        service.stats.started += 1
        await asyncio.sleep(service.first_token_s + service.interval_s * max(len(completion.tokens) - 1, 0))
        service.stats.finished += 1
        return JSONResponse({
            "id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_sse_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text, "refusal": None},
                         "logprobs": None, "finish_reason": completion.finish_reason}],
            "usage": completion.usage,
        })

    async def _relay_completion(service: ChatService, chat: ChatRequest, raw: bytes, model: str) -> Any:
        # Wait for the upstream's head here, before ours goes out, so its status (401,
        # 404, 429...) reaches the client as the same status and the SDK raises the
        # same exception it would raise talking to the upstream directly.
        try:
            response = await service.open_upstream("/chat/completions", raw)
        except UpstreamError as e:
            raise APIError.from_upstream(e) from None
        if response.status != 200:
            try:
                body = await response.read_all(64 * 1024)
            except UpstreamError as e:
                raise APIError.from_upstream(e) from None
            finally:
                response.close()
            raise _upstream_error_object(response.status, body)
        if chat.stream:
            return CompletionStream(lambda listener: RelayRun(service, listener, raw, response),
                                    model, chat.include_usage)
        try:
            body = await response.read_all(MAX_UPSTREAM_BODY_BYTES)
        except UpstreamError as e:
            raise APIError.from_upstream(e) from None
        finally:
            response.close()
        return Response(body, 200, content_type="application/json")

    async def list_models(service: ChatService, request: Request) -> Any:
        if service.endpoint is not None:
            return await _relay_get(service, "/models")
        return JSONResponse({"object": "list", "data": [_model_object(MOCK_MODEL)]})

    async def get_model(service: ChatService, request: Request) -> Any:
        name = request.path_params["model"]
        if service.endpoint is not None:
            return await _relay_get(service, "/models/" + quote(name, safe=""))
        service.check_model(name)
        return JSONResponse(_model_object(name))

    async def _relay_get(service: ChatService, path: str) -> Response:
        try:
            response = await service.open_upstream(path)
            try:
                body = await response.read_all(MAX_UPSTREAM_BODY_BYTES)
            finally:
                response.close()
        except UpstreamError as e:
            raise APIError.from_upstream(e) from None
        if response.status != 200:
            raise _upstream_error_object(response.status, body)
        return Response(body, 200, content_type="application/json")

    # -- /chat ---------------------------------------------------------------------------

    async def chat_stream(service: ChatService, request: Request) -> Any:
        if last_event_id_of(request):
            # An EventSource reconnecting to a one-shot answer: 204 makes it stop rather
            # than generate the answer again (resumable answers are /chat/streams).
            return Response(b"", 204)
        prompt = request.query_param("prompt")
        if prompt is None:
            raise _missing("prompt")
        if len(prompt) > MAX_CHAT_BODY_BYTES:
            raise APIError(413, "prompt too long", param="prompt", code="request_too_large")
        max_tokens = request.query_param("max_tokens")
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}],
                                "model": request.query_param("model")}
        if max_tokens is not None:
            body["max_tokens"] = int(max_tokens) if max_tokens.isdigit() else max_tokens
        chat = parse_chat_request(body, require_model=False)
        model = service.check_model(chat.model)
        return NamedEventStream(service.starter(chat, model))

    async def start_stream(service: ChatService, request: Request) -> Any:
        _, body = await _read_chat_body(request)
        chat = parse_chat_request(body, require_model=False)
        job = service.start_job(chat, service.check_model(chat.model))
        location = [("Location", f"/chat/streams/{job.id}"), ("Chat-Stream-Id", job.id)]
        if "respond-async" in (request.headers.get("prefer") or ""):
            return JSONResponse(job.describe(), 202, [*location, ("Preference-Applied", "respond-async")])
        stream = await _job_stream(service, request, job)
        stream.headers.append(location[0])
        return stream

    def _job(service: ChatService, request: Request) -> Job:
        job = service.jobs.get(request.path_params["id"])
        if job is None:
            raise APIError(404, "No such chat stream (it may have expired).", param="id", code="stream_not_found")
        return job

    async def resume_stream(service: ChatService, request: Request) -> Any:
        return await _job_stream(service, request, _job(service, request))

    async def cancel_stream(service: ChatService, request: Request) -> Any:
        job = _job(service, request)
        job.stop("cancelled")
        return JSONResponse(job.describe())

    app.add_route("/v1/chat/completions", api(chat_completions), ["POST"])
    app.add_route("/v1/models", api(list_models))
    app.add_route("/v1/models/{model}", api(get_model))
    app.add_route("/chat/stream", api(chat_stream))
    app.add_route("/chat/streams", api(start_stream), ["POST"])
    app.add_route("/chat/streams/{id}", api(resume_stream))
    app.add_route("/chat/streams/{id}", api(cancel_stream), ["DELETE"])
    app.add_route("/chat/streams/{id}/cancel", api(cancel_stream), ["POST"])


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": MOCK_CREATED, "owned_by": "sse_server"}
