"""Resumable generations: a job outlives its connections, its events live in a channel.

Strategy. A Job is a run's listener that publishes each event to a channel of its
own (``gen:<id>``) on the jobs' engine, so the engine's ids, history and fan-out give
resume for free: a client that drops comes back with Last-Event-ID and gets each
token exactly once. The job table bounds what clients can make us hold: a number of
jobs (running and finished), a number of events per job, an idle limit after which
a job nobody watches is cancelled, and a retention after which a finished one is
forgotten. One shared sweep timer enforces the last two; it runs only while the
table holds jobs.

The jobs' engine is the configured one, in a namespace of its own: this process's
memory by default, with ``--backplane`` Redis under the key prefix ``sse:jobs:``, so
job channels are never reachable through /channels/{name}/events (nobody can read
or inject into someone's answer) and every node sees every job:

- **Order**: a Redis publish awaits, a listener's calls do not. Each job has one
  outbox drained by one task at a time, so its events are stored in the order the
  run produced them: no token overtakes another or the final ``done``.
- **End**: a job's stream ends after its ``done`` or ``error`` event (whichever
  engine carries it); a resume whose replay holds it ends after the replay.
- **Resume anywhere**: the node that runs a job holds its Job; any other node
  finds the job from its channel's history (``start`` first, the final event
  last), so an unknown id is still a 404 and a finished job resumed from its last
  event a 204.
- **Cancel anywhere**: every node follows a control channel of the namespace;
  a cancel on a node that does not run the job publishes the job's id there, and
  waits (bounded) for the job's final event, which it answers with.
- **Idle**: a job counts as watched when any node has a subscriber on its channel
  (``Engine.subscribed_anywhere``: PUBSUB NUMSUB in Redis, where a node is
  subscribed to a topic exactly while it has subscribers for it); while the
  engine cannot answer, every job counts as watched (an outage is not idleness).
- The per-client cap on running jobs counts this node's jobs only: a client
  spread over N nodes may run N times its share (the table is bounded per node).

Every use of the jobs' engine in the ai package is in this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..channels import EncodedEvent, Engine, EngineUnavailableError, MemoryEngine
from ..sse.streams import ChannelStream
from .generation import Listener, Run
from .wire import APIError, dumps

if TYPE_CHECKING:
    from ..app import Request
    from ..config import Config

__all__ = [
    "DEFAULT_JOB_LIMITS",
    "JOB_KEY_PREFIX",
    "JobLimits",
    "MAX_JOB_EVENTS",
    "Job",
    "JobStream",
    "JobTable",
    "make_job_engine",
]

log = logging.getLogger("sse_server")

# Every event of a job stays in its channel's history so a resume can replay it;
# this bounds one job's memory (the job ends with finish_reason "length" there).
MAX_JOB_EVENTS = 4_096
JOB_KEY_PREFIX = "sse:jobs:"  # the jobs' namespace in Redis; the channels' is "sse:"
_CONTROL_CHANNEL = "control"  # cancels for another node's jobs; job channels are "gen:<id>"
_JOB_ID = re.compile(r"gen_[A-Za-z0-9_-]{16}")  # what start() makes: "gen_" + token_urlsafe(12)
# A job's history in Redis outlives its last publish by the retention plus this
# margin, so a job whose upstream is silent a while (still running) keeps its events.
_QUIET_MARGIN_S = 600.0
_ERROR_ATTEMPTS, _ERROR_RETRY_S = 5, 1.0  # a job whose events cannot be stored: its final error
_RELISTEN_ATTEMPTS = 20  # control channel lost (Redis lost its data): tries, with backoff up to 2 s
_FINAL_LINES = (b"\nevent: done\n", b"\nevent: error\n")  # after the id line; data lines start "data:"


def _is_final(event: EncodedEvent) -> bool:
    """A job's last event: ``done`` or ``error``."""
    raw = event.raw
    return _FINAL_LINES[0] in raw or _FINAL_LINES[1] in raw


def _fields(raw: bytes) -> tuple[str | None, str]:
    """An encoded event's name and data (its data lines joined)."""
    name, data = None, []
    for line in raw.decode().split("\n"):
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    return name, "\n".join(data)


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What the job table may hold, and for how long."""

    max_jobs: int = 1_000  # running + finished jobs kept; bounds memory with MAX_JOB_EVENTS
    idle_cancel_s: float = 30.0  # a job nobody has watched for this long is cancelled
    retention_s: float = 300.0  # a finished job can be resumed (replayed) this long


DEFAULT_JOB_LIMITS = JobLimits()


def make_job_engine(config: Config, limits: JobLimits = DEFAULT_JOB_LIMITS) -> Engine:
    """The jobs' engine: Redis under JOB_KEY_PREFIX with ``--backplane``, else memory.

    Either way it is not the channels' engine: job channels are unreachable through
    /channels/{name}/events, and every event of a job fits in its history.
    """
    if config.backplane:
        from ..channels.redis import RedisEngine  # the optional extra: only when configured

        return RedisEngine(
            config.backplane, MAX_JOB_EVENTS, config.max_channels, history_bytes=config.history_bytes,
            max_event_bytes=config.max_event_bytes, history_ttl_s=limits.retention_s + _QUIET_MARGIN_S,
            timeout_s=config.backplane_timeout_s, key_prefix=JOB_KEY_PREFIX,
        )
    return MemoryEngine(MAX_JOB_EVENTS, max_channels=limits.max_jobs + 1)


def _not_found() -> APIError:
    return APIError(404, "No such chat stream (it may have expired).", param="id", code="stream_not_found")


@dataclass(slots=True, eq=False)
class Job:
    """A generation that outlives its connections: its events go to a channel.

    Every event keeps the engine's id, so a client that drops resumes with
    Last-Event-ID and gets each token exactly once. The first event is ``start``
    (the job id); the last is ``done`` (finish_reason, usage) or ``error``, after
    which every subscriber's response ends.
    """

    id: str
    model: str
    table: JobTable
    client: str | None = None  # who started it: the per-client cap counts its running jobs
    created: int = field(default_factory=lambda: int(time.time()))
    state: str = "running"  # running, done, cancelled, failed
    run: Run | None = None
    events: int = 0
    unwatched_since: float | None = None
    finished_at: float = 0.0
    # Events not yet stored, oldest first, and the one task storing them (None: idle).
    outbox: deque[tuple[str, str]] = field(default_factory=deque)
    sender: asyncio.Task[None] | None = None

    @property
    def channel(self) -> str:
        return f"gen:{self.id}"

    @property
    def running(self) -> bool:
        return self.state == "running"

    def _publish(self, event: str, payload: dict[str, Any]) -> None:
        self.events += 1
        self.outbox.append((event, dumps(payload)))
        if self.sender is None:
            self.sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        """Store the outbox in order, one publish at a time (a Redis publish awaits)."""
        broker = self.table.broker
        try:
            while self.outbox:
                event, data = self.outbox[0]
                try:
                    await broker.publish(self.channel, data, event=event)
                except EngineUnavailableError as e:
                    self.outbox.clear()
                    self._unstorable(e)
                    await self._store_error(broker)
                    return
                self.outbox.popleft()
        finally:
            self.sender = None  # no await since the outbox was seen empty: nothing is stranded

    def _unstorable(self, error: EngineUnavailableError) -> None:
        """An event could not be stored: the answer has a hole, so the job fails (a
        retry could store a token twice, as a publish that timed out may have landed)."""
        log.warning("generation %s failed: its events cannot be stored (%s)", self.id, error)
        if self.running:
            if self.run is not None:
                self.run.cancel()
            self.finished_at = asyncio.get_running_loop().time()
            self.table.job_ended(self)
        self.state = "failed"  # from here on token/finish/fail/stop publish nothing

    async def _store_error(self, broker: Engine) -> None:
        """Try to end the channel with an ``error`` a few times, so watchers on every
        node end once the engine answers again rather than wait for a ``done``."""
        data = dumps({"message": "the generation's events could not be stored; start it again",
                      "type": "server_error", "param": None, "code": "engine_unavailable"})
        for _ in range(_ERROR_ATTEMPTS):
            await asyncio.sleep(_ERROR_RETRY_S)
            try:
                await broker.publish(self.channel, data, event="error")
                return
            except EngineUnavailableError:
                continue
        log.warning("generation %s: its final error could not be stored either", self.id)

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
        return None  # the engine drops subscribers that fall behind; the job never waits

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
        self.finished_at = asyncio.get_running_loop().time()
        self.table.job_ended(self)
        self._publish(event, payload)

    def describe(self) -> dict[str, Any]:
        return _description(self.id, self.model, self.created, self.state)


def _description(job_id: str, model: str, created: int, state: str) -> dict[str, Any]:
    return {"id": job_id, "object": "chat.stream", "model": model, "created": created,
            "state": state, "url": f"/chat/streams/{job_id}"}


def _describe_events(job_id: str, events: Sequence[EncodedEvent]) -> dict[str, Any]:
    """A job's description from its channel's events (a job another node runs)."""
    start: dict[str, Any] = {}
    name, data = _fields(events[0].raw)
    if name == "start":
        start = json.loads(data)
    state = "running"
    if _is_final(events[-1]):
        name, data = _fields(events[-1].raw)
        if name == "error":
            state = "failed"
        else:
            state = "cancelled" if json.loads(data).get("finish_reason") == "cancelled" else "done"
    return _description(job_id, str(start.get("model", "")), int(start.get("created", 0)), state)


class JobStream(ChannelStream):
    """A job's channel as a response: it ends after the job's final event.

    The engine does not know a job's events; this stream does, so a job ends the
    same way on every engine and every node.
    """

    __slots__ = ("final",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.final = False  # the final event is in the replay or was delivered

    @classmethod
    async def open(cls, request: Request, engine: Engine, channel: str) -> JobStream:
        """The channel after the request's Last-Event-ID, or from its first event."""
        stream = await cls.subscribe(request, engine, [channel], from_start=True)
        assert isinstance(stream, JobStream)
        sub = stream.subscription
        assert sub is not None
        if any(_is_final(e) for e in sub.replay):
            stream.final = sub.closed = True  # the stream ends after its replay
            engine.unsubscribe(sub)
        return stream

    def deliver(self, event: EncodedEvent) -> bool:
        if not super().deliver(event):
            return False
        if _is_final(event) and not self.final:
            self.final = True
            # Not now: the engine is iterating its subscribers, and ending unsubscribes.
            self._loop.call_soon(self.end)
        return True


class _Waiter:
    """A subscriber that only waits for a job's final event (a cancel from another node)."""

    def __init__(self) -> None:
        self.final: asyncio.Future[EncodedEvent] = asyncio.get_running_loop().create_future()

    def deliver(self, event: EncodedEvent) -> bool:
        if _is_final(event) and not self.final.done():
            self.final.set_result(event)
        return True

    def end(self) -> None:
        if not self.final.done():
            self.final.set_exception(EngineUnavailableError("the job's channel ended without its final event"))


class _Control:
    """This node's subscriber on the control channel: cancels of its jobs from other nodes."""

    def __init__(self, table: JobTable) -> None:
        self.table = table

    def deliver(self, event: EncodedEvent) -> bool:
        name, job_id = _fields(event.raw)
        job = self.table.get(job_id)
        if name == "cancel" and job is not None and job.stop("cancelled"):
            log.info("generation %s cancelled from another node", job_id)
        return True

    def end(self) -> None:
        self.table.control_lost()


class JobTable(Mapping[str, Job]):
    """The jobs this node runs by id, oldest first, with their limits.

    Read it like a dict (``table[job_id]``, ``job_id in table``); add with
    ``start``, follow any node's job with ``stream`` and stop one with ``cancel``.
    """

    def __init__(self, config: Config, limits: JobLimits = DEFAULT_JOB_LIMITS) -> None:
        self.broker = make_job_engine(config, limits)
        self.shared = config.backplane is not None  # other nodes run jobs on this engine too
        self._jobs: dict[str, Job] = {}  # insertion order = age
        self.max_jobs = limits.max_jobs
        # One client must not fill the table for everybody: its running jobs are capped,
        # on this node (a client spread over N nodes may run N times its share).
        self.max_jobs_per_client = config.max_jobs_per_client
        self._running_by_client: Counter[str] = Counter()
        self.idle_cancel_s = limits.idle_cancel_s
        self.retention_s = limits.retention_s
        # A cancel for another node's job: the control publish, that node's stop and
        # its final publish each take at most one backplane timeout; then give up.
        self.cancel_wait_s = 3 * config.backplane_timeout_s + 1.0
        self.flush_s = 2 * config.backplane_timeout_s  # at shutdown, for the jobs' last events
        self._sweep_s = max(0.05, min(1.0, limits.idle_cancel_s / 4, limits.retention_s / 4))
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._control: Any = None  # the control channel's Subscription while followed
        self._listening: asyncio.Task[None] | None = None  # subscribing to it
        self._relistening: asyncio.Task[None] | None = None
        self._closed = False

    def __getitem__(self, job_id: str) -> Job:
        return self._jobs[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    # -- the control channel -----------------------------------------------------------

    async def listen(self) -> None:
        """Follow the control channel (with a shared engine; once), so other nodes can
        cancel this node's jobs. EngineUnavailableError when the engine cannot answer."""
        if not self.shared or self._control is not None or self._closed:
            return
        if self._listening is None or self._listening.done():
            self._listening = asyncio.get_running_loop().create_task(self._subscribe_control())
        await asyncio.shield(self._listening)

    async def _subscribe_control(self) -> None:
        self._control = await self.broker.subscribe([_CONTROL_CHANNEL], _Control(self))

    def control_lost(self) -> None:
        """The engine ended the control subscription (Redis lost its data): follow it again."""
        self._control = self._listening = None
        if not self._closed:
            self._relistening = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        backoff_s = 0.05
        for _ in range(_RELISTEN_ATTEMPTS):
            await asyncio.sleep(backoff_s)
            try:
                await self.listen()
                return
            except EngineUnavailableError:
                backoff_s = min(backoff_s * 2, 2.0)
        log.warning("cannot follow the jobs' control channel; the next start tries again")

    # -- jobs ----------------------------------------------------------------------------

    def start(self, model: str, start_run: Callable[[Listener], Run], client: str | None = None) -> Job:
        """A new running job; APIError 429 when its client already runs its share, or
        when the table is full of running jobs."""
        if client is not None and self._running_by_client[client] >= self.max_jobs_per_client:
            raise APIError(429, f"You have {self.max_jobs_per_client} generations running; wait for one to end.",
                           "rate_limit_error", None, "too_many_generations_for_client", [("Retry-After", "5")])
        if len(self._jobs) >= self.max_jobs and not self._evict_finished_job():
            raise APIError(429, f"{self.max_jobs} generations are running; try again shortly.",
                           "rate_limit_error", None, "too_many_generations", [("Retry-After", "5")])
        job = Job("gen_" + secrets.token_urlsafe(12), model, self, client)
        self._jobs[job.id] = job
        if client is not None:
            self._running_by_client[client] += 1
        job._publish("start", {"id": job.id, "model": model, "created": job.created})
        job.run = start_run(job)
        if self._sweeper is None and self._sweeping is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)
        return job

    async def stream(self, request: Request, job_id: str) -> JobStream | None:
        """A job's events after the request's Last-Event-ID (all of them without one),
        then live, wherever it runs; None when the job is over and the client had its
        last event. APIError 404 for a job no node knows; EngineUnavailableError."""
        local = job_id in self._jobs
        if not local and not (self.shared and _JOB_ID.fullmatch(job_id)):
            raise _not_found()
        channel = f"gen:{job_id}"
        stream = await JobStream.open(request, self.broker, channel)
        stream.headers.append(("Chat-Stream-Id", job_id))
        sub = stream.subscription
        if stream.final or (sub is not None and sub.replay):
            return stream  # a known job, with something to send
        # Nothing to replay: is the job known at all, and is it over?
        try:
            history = await self.broker.history(channel)
        except BaseException:
            stream.close()
            raise
        if stream.final:
            return stream  # its final event arrived meanwhile
        if not history.events and not local:
            stream.close()
            raise _not_found()
        if history.events and _is_final(history.events[-1]):
            stream.close()
            return None
        return stream

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a job wherever it runs; its description after. APIError 404 for a job no
        node knows, 503 when the node running it did not stop it in time."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.stop("cancelled")
            return job.describe()
        if not (self.shared and _JOB_ID.fullmatch(job_id)):
            raise _not_found()
        waiter = _Waiter()
        sub = await self.broker.subscribe([f"gen:{job_id}"], waiter, from_start=True)
        try:
            events = list(sub.replay)
            if not events:
                raise _not_found()
            final = next((e for e in events if _is_final(e)), None)
            if final is None:
                await self.broker.publish(_CONTROL_CHANNEL, job_id, event="cancel")
                try:
                    async with asyncio.timeout(self.cancel_wait_s):
                        final = await waiter.final
                except (TimeoutError, EngineUnavailableError):
                    raise APIError(503, "The node running this generation did not stop it in time; try again.",
                                   "server_error", None, "cancel_timeout", [("Retry-After", "1")]) from None
                events.append(final)
            return _describe_events(job_id, events)
        finally:
            self.broker.unsubscribe(sub)

    def job_ended(self, job: Job) -> None:
        """``job`` stopped running: its client may start another."""
        if job.client is not None:
            self._running_by_client[job.client] -= 1
            if self._running_by_client[job.client] <= 0:
                del self._running_by_client[job.client]

    def forget(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        if isinstance(self.broker, MemoryEngine):
            self.broker.remove_channel(job.channel)  # in Redis its keys expire (history_ttl_s)

    def _evict_finished_job(self) -> bool:
        for job in self._jobs.values():
            if not job.running:
                self.forget(job)
                return True
        return False

    def _sweep(self) -> None:
        self._sweeper = None
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep_once())

    async def _sweep_once(self) -> None:
        """One shared timer: cancel jobs nobody watches (on any node), forget old finished ones."""
        loop = asyncio.get_running_loop()
        try:
            running = [job for job in self._jobs.values() if job.running]
            try:
                watched = await self.broker.subscribed_anywhere([job.channel for job in running])
            except EngineUnavailableError:
                watched = [True] * len(running)  # an outage is not idleness: nobody can tell
            now = loop.time()
            for job, seen in zip(running, watched, strict=True):
                if seen:
                    job.unwatched_since = None
                elif job.unwatched_since is None:
                    job.unwatched_since = now
                elif now - job.unwatched_since >= self.idle_cancel_s:
                    log.info("cancelling generation %s: nobody watched it for %.0f s", job.id, self.idle_cancel_s)
                    job.stop("cancelled")
            for job in list(self._jobs.values()):
                if not job.running and now - job.finished_at >= self.retention_s:
                    self.forget(job)
        finally:
            self._sweeping = None
            # An empty table needs no timer; the next start() arms it again.
            if self._jobs and not self._closed:
                self._sweeper = loop.call_later(self._sweep_s, self._sweep)

    def close(self) -> None:
        """Server shutdown: stop every running job and the sweep timer."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._sweeping is not None:
            self._sweeping.cancel()
        for job in list(self._jobs.values()):
            job.stop("cancelled")

    async def aclose(self) -> None:
        """``close``, then store what the jobs still have to say (bounded: two engine
        timeouts, time for the final events in flight), then release the engine."""
        self.close()
        senders = {job.sender for job in self._jobs.values() if job.sender is not None}
        if senders:
            _, late = await asyncio.wait(senders, timeout=self.flush_s)
            for sender in late:
                sender.cancel()
        for task in (self._listening, self._relistening):
            if task is not None:
                task.cancel()
        self._control = None  # closing the engine ends its subscriptions
        await self.broker.close()
