"""Resumable generations: a job outlives its connections, its events live in a channel.

Strategy. A Job is a run's listener that publishes each event to a broker channel
of its own (``gen:<id>``), so the broker's ids, history and fan-out give resume
for free: a client that drops comes back with Last-Event-ID and gets each token
exactly once. The job table bounds what clients can make us hold: a number of
jobs (running and finished), a number of events per job, an idle limit after
which a job nobody watches is cancelled, and a retention after which a finished
one is forgotten. One shared sweep timer enforces the last two; it runs only
while the table holds jobs.

Every use of the broker in the ai package is in this module.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..channels import MemoryEngine
from ..sse.streams import ChannelStream
from .generation import Listener, Run
from .wire import APIError, dumps

if TYPE_CHECKING:
    from ..app import Request
    from ..config import Config

__all__ = [
    "DEFAULT_JOB_LIMITS",
    "JobLimits",
    "MAX_JOB_EVENTS",
    "Job",
    "JobTable",
]

log = logging.getLogger("sse_server")

# Every event of a job stays in its channel's history so a resume can replay it;
# this bounds one job's memory (the job ends with finish_reason "length" there).
MAX_JOB_EVENTS = 4_096


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What the job table may hold, and for how long."""

    max_jobs: int = 1_000  # running + finished jobs kept; bounds memory with MAX_JOB_EVENTS
    idle_cancel_s: float = 30.0  # a job nobody has watched for this long is cancelled
    retention_s: float = 300.0  # a finished job can be resumed (replayed) this long


DEFAULT_JOB_LIMITS = JobLimits()


@dataclass(slots=True, eq=False)
class Job:
    """A generation that outlives its connections: its events go to a broker channel.

    Every event keeps the broker's id, so a client that drops resumes with
    Last-Event-ID and gets each token exactly once. The first event is ``start``
    (the job id); the last is ``done`` (finish_reason, usage) or ``error``, after
    which the channel is closed and every subscriber's response ends.
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

    @property
    def channel(self) -> str:
        return f"gen:{self.id}"

    @property
    def running(self) -> bool:
        return self.state == "running"

    def _publish(self, event: str, payload: dict[str, Any]) -> None:
        self.events += 1
        self.table.broker.publish_nowait(self.channel, dumps(payload), event=event)

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
        self.finished_at = asyncio.get_running_loop().time()
        self.table.job_ended(self)
        self._publish(event, payload)
        self.table.broker.close_channel(self.channel)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.stream", "model": self.model, "created": self.created,
                "state": self.state, "url": f"/chat/streams/{self.id}"}


class JobTable(Mapping[str, Job]):
    """The jobs of one service by id, oldest first, with their limits.

    Read it like a dict (``table[job_id]``, ``job_id in table``); add with
    ``start`` and follow a job with ``stream``.
    """

    def __init__(self, config: Config, limits: JobLimits = DEFAULT_JOB_LIMITS) -> None:
        # Generations get a broker of their own: job channels are unreachable through
        # /channels/{name}/events (nobody can inject into someone's answer), and every
        # event of a job fits in its history.
        self.broker = MemoryEngine(MAX_JOB_EVENTS, max_channels=limits.max_jobs + 1)
        self._jobs: dict[str, Job] = {}  # insertion order = age
        self.max_jobs = limits.max_jobs
        # One client must not fill the table for everybody: its running jobs are capped.
        self.max_jobs_per_client = config.max_jobs_per_client
        self._running_by_client: Counter[str] = Counter()
        self.idle_cancel_s = limits.idle_cancel_s
        self.retention_s = limits.retention_s
        self._sweep_s = max(0.05, min(1.0, limits.idle_cancel_s / 4, limits.retention_s / 4))
        self._sweeper: asyncio.TimerHandle | None = None

    def __getitem__(self, job_id: str) -> Job:
        return self._jobs[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

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
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)
        return job

    async def stream(self, request: Request, job: Job) -> ChannelStream:
        """The job's channel: after the request's Last-Event-ID, or from its first event."""
        stream = await ChannelStream.subscribe(request, self.broker, [job.channel], from_start=True)
        stream.headers.append(("Chat-Stream-Id", job.id))
        return stream

    def job_ended(self, job: Job) -> None:
        """``job`` stopped running: its client may start another."""
        if job.client is not None:
            self._running_by_client[job.client] -= 1
            if self._running_by_client[job.client] <= 0:
                del self._running_by_client[job.client]

    def forget(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        self.broker.remove_channel(job.channel)

    def _evict_finished_job(self) -> bool:
        for job in self._jobs.values():
            if not job.running:
                self.forget(job)
                return True
        return False

    def _sweep(self) -> None:
        """One shared timer: cancel jobs nobody watches, forget old finished ones."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for job in list(self._jobs.values()):
            if job.running:
                if self.broker.subscriber_count(job.channel):
                    job.unwatched_since = None
                elif job.unwatched_since is None:
                    job.unwatched_since = now
                elif now - job.unwatched_since >= self.idle_cancel_s:
                    log.info("cancelling generation %s: nobody watched it for %.0f s", job.id, self.idle_cancel_s)
                    job.stop("cancelled")
            elif now - job.finished_at >= self.retention_s:
                self.forget(job)
        # An empty table needs no timer; the next start() arms it again.
        self._sweeper = loop.call_later(self._sweep_s, self._sweep) if self._jobs else None

    def close(self) -> None:
        """Server shutdown: stop every running job and the sweep timer."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for job in list(self._jobs.values()):
            job.stop("cancelled")
