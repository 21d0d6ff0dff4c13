"""Generations and their pacing: runs that produce tokens, and the streams they write.

Strategy. A generation is a *run* (MockRun or RelayRun) that calls a *listener*:
``token(text, raw)`` per piece, then ``finish(reason, usage)`` or ``fail(error)``.
Listeners write the wire format straight into a response (an OpenAI chunk stream,
named events; both here) or publish to a channel (resumable jobs, jobs.py), so one
run type serves every endpoint. Mock runs own no task: one shared Pacer timer per
loop walks a heap of due tokens and writes each into its sink, so 1,000 paced
streams cost a timer wake-up every couple of milliseconds, not 1,000 sleeping
tasks. A relay run is one task reading the upstream; cancelling it aborts the
upstream socket. Errors after the head has gone out become a last error event,
never a hung or silently truncated stream.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..app import Sink
from ..sse import EventStreamError, EventStreamParser, encode_event
from ..sse.streams import EventStream
from ..untrusted import BadJSON, load_json
from .mockmodel import MockCompletion
from .upstream import UpstreamError, UpstreamResponse
from .wire import (
    DONE,
    MAX_UPSTREAM_ERROR_BYTES,
    APIError,
    ChunkEncoder,
    completion_id,
    dumps,
    upstream_error,
    utf8_safe,
)

__all__ = [
    "CompletionStream",
    "GenerationStream",
    "Listener",
    "MockRun",
    "NamedEventStream",
    "Pacer",
    "RelayRun",
    "Run",
    "Stats",
]

log = logging.getLogger("sse_server")

MAX_UPSTREAM_EVENT_CHARS = 1024 * 1024  # one upstream event may not pin more memory than this


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


# -- the mock: paced by one shared timer -------------------------------------------------


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


# -- the relay: one task per generation --------------------------------------------------


OpenUpstream = Callable[[], Awaitable[UpstreamResponse]]


class RelayRun:
    """A generation relayed from an upstream chat completions stream: one task.

    ``open_upstream`` sends the request when the run has no ``response`` yet; the
    /v1 handler passes one whose head it already waited for.
    """

    __slots__ = ("done", "finished", "listener", "open_upstream", "response", "stats", "task")

    def __init__(self, listener: Listener, open_upstream: OpenUpstream, stats: Stats,
                 response: UpstreamResponse | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.listener = listener
        self.open_upstream = open_upstream
        self.stats = stats
        self.response = response
        self.finished = False
        self.done: asyncio.Future[None] = loop.create_future()
        stats.started += 1
        self.task = loop.create_task(self._run())

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self.stats.cancelled += 1
            self.task.cancel()
            if self.response is not None:
                self.response.close()  # at once, not on the task's next turn
            if not self.done.done():
                self.done.set_result(None)

    def _fail(self, error: APIError) -> None:
        if self.finished:
            return
        self.finished = True
        self.stats.failed += 1
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
            self.response = await self.open_upstream()
        response = self.response
        if response.status != 200:
            raise upstream_error(response.status, await response.read_all(MAX_UPSTREAM_ERROR_BYTES))
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
                    self.stats.finished += 1
                    listener.finish(finish or "stop", usage)
                    return
                try:
                    chunk = load_json(data, surrogates="replace")
                except BadJSON:
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
                            text = utf8_safe(delta["content"])
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
    cut_in_band = True  # a cut answer ends with an error event (see on_shutdown)

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
        if sink is None or sink.is_closing():
            return  # not started, or the connection notices and cancels us
        sink.write(wire)
        self.events += 1
        self.wrote = True
        if sink.buffered_bytes() > sink.config.max_subscriber_buffer_bytes:
            # A client this far behind a paced stream is gone in practice; like a slow
            # channel subscriber it is dropped rather than buffered without bound.
            sink.abort()

    async def on_shutdown(self, sink: Sink) -> None:
        """The server is stopping: say so rather than end the answer silently."""
        run = self.run
        if run is not None and not run.done.done():
            self.fail({"message": "the server is shutting down", "type": "server_error", "param": None,
                       "code": "server_shutdown"})
            run.cancel()

    async def writable(self) -> None:
        sink = self.sink
        if sink is not None and not sink.is_closing():
            try:
                await sink.drain()
            except ConnectionError:
                pass  # the connection cancels us on its next turn


class CompletionStream(GenerationStream):
    """``/v1/chat/completions`` with ``"stream": true``: OpenAI chunk objects, then [DONE].

    For the mock, each chunk comes from a ChunkEncoder (wire.py). For a relay, the
    upstream's chunks pass through verbatim and only [DONE] is ours.
    """

    __slots__ = ("_chunks",)

    def __init__(self, start: Callable[[Listener], Run], model: str, include_usage: bool) -> None:
        super().__init__(start, retry_ms=-1)
        self._chunks = ChunkEncoder(completion_id(), int(time.time()), model, include_usage)

    def token(self, text: str, raw: str | None) -> None:
        if raw is not None:
            self._emit(encode_event(raw))
            return
        self._emit(self._chunks.token(text).encode())

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None:
        if isinstance(self.run, RelayRun):
            self._emit(DONE.encode())
            return
        self._emit(self._chunks.finish(reason, usage).encode())

    def fail(self, error: dict[str, Any]) -> None:
        # What the OpenAI API sends when a stream fails; its SDK raises APIError on it.
        self._emit(encode_event(dumps({"error": error})))


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
        self._emit(encode_event(dumps(payload), event=event, id=str(self._seq)))

    def token(self, text: str, raw: str | None) -> None:
        if text:
            self._event("token", {"content": text})

    def finish(self, reason: str, usage: dict[str, Any] | None) -> None:
        self._event("done", {"finish_reason": reason, "usage": usage})

    def fail(self, error: dict[str, Any]) -> None:
        self._event("error", error)
