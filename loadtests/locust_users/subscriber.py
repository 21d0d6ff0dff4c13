"""SSESubscriber: holds one channel stream for the user's whole life.

Reports (request type SSE):
  connect             TCP connect + request until the response head (200)
  first event         request sent until the first event of the first stream
  publish-to-receive  per event: the publisher's time.time_ns() (the event's first
                      word) to the moment this user parsed the event; during the
                      ramp (before every user is up) as "publish-to-receive (ramp)"
  stream              failures only: a stream that broke, ended, skipped an id,
                      or was reset; its response time is how long the stream lived

A broken stream is resumed with Last-Event-ID, as an EventSource would, so the
id check also covers the server's replay. Publisher and subscribers run in one
process and share its clock; the latency includes the time this process takes
to get to the socket among all the others that the same event woke up.
"""

from __future__ import annotations

import itertools
import time

import gevent
from locust import User, constant, task
from locust.exception import StopUser

from sse_server.channels import parse_event_id
from sse_server.sse import EventStreamError, EventStreamParser

from .common import DELIVERIES, SSE, TALLY, host_port, ms_since, report
from .wire import Connection, Head, HTTPFailure

__all__ = ["SSESubscriber", "channel_name"]

MAX_STREAMS_PER_USER = 100  # resumes after drops; a server that keeps dropping is failing anyway
RESUME_DELAY_S = (
    1.0  # the server's retry: hint is 3 s; shorter keeps a run's failures visible but short
)
MAX_EVENT_CHARS = 1024 * 1024  # bounds what one unterminated event can pin in the parser

# While users are still being spawned this process also opens hundreds of
# connections a second; those latencies are kept apart from the hold's.
LATENCY = "publish-to-receive"
LATENCY_IN_RAMP = "publish-to-receive (ramp)"

_next_subscriber = itertools.count()


def channel_name(i: int) -> str:
    return f"load-{i}"


class SSESubscriber(User):
    """One EventSource-like client on channel load-{k}; k spreads users evenly."""

    weight = 10
    wait_time = constant(0)

    def on_start(self) -> None:
        self.host_name, self.port = host_port(self.host)
        options = self.environment.parsed_options
        channels = max(1, options.channels if options else 10)
        self.channel = channel_name(next(_next_subscriber) % channels)
        self.read_timeout_s = options.sse_read_timeout if options else 60.0
        self.last_event_id: str | None = None
        self.last_seq: int | None = None
        self.first_event_reported = False
        self.span = DELIVERIES.span(self.channel)  # what it saw, for the lost-event count
        TALLY.subscribers += 1

    def on_stop(self) -> None:
        TALLY.subscribers -= 1

    @task
    def hold(self) -> None:
        for attempt in range(MAX_STREAMS_PER_USER):
            if attempt:
                gevent.sleep(RESUME_DELAY_S)
            self._one_stream()
        raise StopUser()  # bounded: this user has failed often enough

    def _one_stream(self) -> None:
        env = self.environment
        conn = Connection(self.host_name, self.port, timeout_s=self.read_timeout_s)
        headers = [("Accept", "text/event-stream"), ("Cache-Control", "no-cache")]
        if self.last_event_id:
            headers.append(("Last-Event-ID", self.last_event_id))
        start = time.perf_counter()
        try:
            try:
                conn.send("GET", f"/channels/{self.channel}/events", headers)
                sent = time.perf_counter()
                head = conn.read_head()
            except (OSError, HTTPFailure) as e:
                report(env, SSE, "connect", ms_since(start), exception=e)
                return
            if head.status != 200 or not head.chunked:
                why = f"status {head.status}" if head.status != 200 else "response not chunked"
                report(env, SSE, "connect", ms_since(start), exception=HTTPFailure(why))
                return
            report(env, SSE, "connect", ms_since(start, head.first_byte_s))
            TALLY.stream_opened()
            try:
                self._read_events(conn, head, sent)
                error: BaseException = HTTPFailure("the server ended the stream")
            except (OSError, HTTPFailure, EventStreamError) as e:
                error = e
            finally:
                TALLY.connected -= 1
            if not TALLY.stopping:
                TALLY.drops += 1
                report(env, SSE, "stream", ms_since(start), exception=error)
        finally:
            conn.close()

    def _read_events(self, conn: Connection, head: Head, sent_s: float) -> None:
        env = self.environment
        parser = EventStreamParser(
            last_event_id=self.last_event_id or "", max_event_chars=MAX_EVENT_CHARS
        )
        for piece in conn.body(head):
            for event in parser.feed(piece):
                now_ns = time.time_ns()
                TALLY.events += 1
                if not self.first_event_reported:
                    self.first_event_reported = True
                    report(env, SSE, "first event", ms_since(sent_s), len(event.data))
                self.last_event_id = event.id or self.last_event_id
                if event.event == "reset":
                    TALLY.resets += 1
                    self.last_seq = None
                    report(
                        env,
                        SSE,
                        "stream",
                        0,
                        exception=HTTPFailure("server reset the stream (resume id unknown)"),
                    )
                    continue
                self._check_sequence(event.id or "")
                stamp = event.data.partition(" ")[0]
                if stamp.isdigit():
                    name = LATENCY if TALLY.hold_started_at is not None else LATENCY_IN_RAMP
                    report(env, SSE, name, (now_ns - int(stamp)) / 1e6, len(event.data))

    def _check_sequence(self, event_id: str) -> None:
        # Ids are "<epoch>-<seq>" from one sequence shared by every channel, so a
        # channel's ids increase but skip the other channels' numbers: a repeated or
        # older id is a fault here; a lost event shows in DELIVERIES.lost() instead.
        parsed = parse_event_id(event_id)
        if parsed is None:
            return
        seq = parsed[1]
        DELIVERIES.receive(self.span, seq)
        if self.last_seq is not None and seq <= self.last_seq:
            TALLY.reordered += 1
            report(self.environment, SSE, "stream", 0, exception=HTTPFailure("a repeated or older event id"))
        self.last_seq = seq
