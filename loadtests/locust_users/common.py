"""What every Locust user kind shares: command-line options, reporting, the tally.

Strategy: every measurement is a Locust request event (``report``), so Locust's
own statistics, CSV and HTML report carry it, with a stable request type and
name per measurement (run_load.py looks its thresholds up by those names).
What Locust has no table for, whether every subscriber's stream stayed open
while the load was held, is counted in ``TALLY`` and written as JSON at the end
(``--summary-json``).

Lost events (``DELIVERIES``): publishers and subscribers share this process, so
the publishers note the sequence number of every event a 202 accepted, and each
subscriber the range of sequence numbers it saw (first to last, across its
resumes). Every accepted event of a channel inside a subscriber's range must have
reached that subscriber; ``lost`` counts the ones that did not. The ends of a range
are where the subscriber joined and where the run stopped, not losses.
"""

from __future__ import annotations

import bisect
import gc
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import User, events
from locust.env import Environment

from .wire import Connection

__all__ = [
    "DELIVERIES",
    "Deliveries",
    "RequestUser",
    "Span",
    "SSE",
    "CHAT",
    "PAGE",
    "TALLY",
    "Tally",
    "host_port",
    "ms_since",
    "report",
]

# Request types, as they appear in Locust's tables. The names under each are
# listed in loadtests/README.md and used by run_load.py's thresholds.
SSE = "SSE"
CHAT = "CHAT"
PAGE = "PAGE"

SAMPLE_EVERY_S = 0.5  # how often the held-streams count is checked during the hold


@dataclass(slots=True)
class Tally:
    """Subscriber streams over the run (one Locust process)."""

    subscribers: int = 0  # subscriber users alive now
    connected: int = 0  # their streams that are open now
    peak_connected: int = 0
    streams_opened: int = 0
    drops: int = 0  # streams that ended or broke while the test ran
    reordered: int = 0  # events whose id was not greater than the previous one's
    resets: int = 0  # streams the server had to reset (resume id it no longer knew)
    lost: int | None = None  # accepted events a subscriber should have had and did not (at quit)
    events: int = 0  # events received by all subscribers
    hold_started_at: float | None = None  # time.time() when every user was spawned and connected
    hold_ended_at: float | None = None  # time.time() at test_stopping
    min_connected_in_hold: int | None = None
    min_subscribers_in_hold: int | None = None
    # subscribers / connected at test_stopping
    at_stop: dict[str, int] = field(default_factory=dict)
    stopping: bool = False  # test_stopping fired: from here a closed stream is ours, not a failure

    def stream_opened(self) -> None:
        self.connected += 1
        self.streams_opened += 1
        if self.connected > self.peak_connected:
            self.peak_connected = self.connected

    def start_hold(self) -> None:
        if self.hold_started_at is None:
            quiet_gc()
            self.hold_started_at = time.time()
            self.min_connected_in_hold = self.connected
            self.min_subscribers_in_hold = self.subscribers

    def sample(self) -> None:
        if self.hold_started_at is None or self.stopping:
            return
        assert self.min_connected_in_hold is not None and self.min_subscribers_in_hold is not None
        self.min_connected_in_hold = min(self.min_connected_in_hold, self.connected)
        self.min_subscribers_in_hold = min(self.min_subscribers_in_hold, self.subscribers)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("stopping")
        if self.hold_started_at is not None and self.hold_ended_at is not None:
            out["hold_s"] = round(self.hold_ended_at - self.hold_started_at, 1)
        return out


TALLY = Tally()


@dataclass(slots=True)
class Span:
    """The sequence numbers one subscriber saw on its channel: first and last (None: none yet)."""

    channel: str
    first: int | None = None
    last: int | None = None


@dataclass(slots=True)
class Deliveries:
    """Accepted events per channel and who received them; ``lost()`` compares the two."""

    accepted: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    received: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    spans: list[Span] = field(default_factory=list)

    def span(self, channel: str) -> Span:
        span = Span(channel)
        self.spans.append(span)
        return span

    def receive(self, span: Span, seq: int) -> None:
        self.received[span.channel][seq] += 1
        if span.first is None:
            span.first = seq
        span.last = seq

    def lost(self) -> int:
        """Accepted events inside some subscriber's span that it did not receive."""
        lost = 0
        for channel, accepted in self.accepted.items():
            spans = [s for s in self.spans if s.channel == channel and s.first is not None]
            firsts = sorted(s.first for s in spans if s.first is not None)
            lasts = sorted(s.last for s in spans if s.last is not None)
            got = self.received[channel]
            for seq in accepted:
                # Spans holding seq: those that began at or before it, minus those that ended before it.
                expected = bisect.bisect_right(firsts, seq) - bisect.bisect_left(lasts, seq)
                lost += max(0, expected - got[seq])
        return lost


DELIVERIES = Deliveries()


def quiet_gc() -> None:
    """Keep the collector off what the ramp built (thousands of users, sockets, greenlets).

    This process is the measuring instrument: a full collection over everything
    alive took 100-250 ms with 5,000 streams, and showed up as server latency.
    Frozen objects are never scanned again; new garbage still is. (No collect()
    first: that would be one more such pause, right as the hold starts.)
    """
    gc.freeze()


def report(
    env: Environment,
    request_type: str,
    name: str,
    response_time_ms: float,
    length: int = 0,
    exception: BaseException | str | None = None,
) -> None:
    """One measurement (or failure) into Locust's statistics."""
    env.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=response_time_ms,
        response_length=length,
        exception=exception,
        context={},
    )


def ms_since(start_s: float, now_s: float | None = None) -> float:
    """Milliseconds from a time.perf_counter() reading to now (or to now_s)."""
    return ((time.perf_counter() if now_s is None else now_s) - start_s) * 1000.0


def host_port(host: str | None) -> tuple[str, int]:
    """(host, port) from Locust's --host URL, e.g. http://127.0.0.1:8000."""
    if not host:
        raise ValueError("no --host given (e.g. --host http://127.0.0.1:8000)")
    parts = urlsplit(host if "://" in host else f"http://{host}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"--host must be an http:// URL, got {host!r}")
    return parts.hostname, parts.port or 80


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    g = parser.add_argument_group("sse_server users (loadtests/locust_users)")
    g.add_argument("--channels", type=int, default=10, help="channels the subscribers spread over")
    g.add_argument(
        "--publishers",
        type=int,
        default=2,
        help="publisher users (a fixed count; 0: weighted like the others)",
    )
    g.add_argument(
        "--publish-host",
        action="append",
        default=[],
        metavar="URL",
        help="publish to this server instead of --host (repeat: publishers take turns), "
        "e.g. every node behind a load balancer",
    )
    g.add_argument(
        "--publish-interval",
        type=float,
        default=0.5,
        help="seconds between one publisher's events (each goes to the next channel)",
    )
    g.add_argument(
        "--event-bytes", type=int, default=0, help="padding added to each published event"
    )
    g.add_argument(
        "--sse-read-timeout",
        type=float,
        default=60.0,
        help="seconds a subscriber waits for any byte (events or heartbeats) before it calls "
        "the stream dead; keep it above the server's --heartbeat",
    )
    g.add_argument(
        "--chat-users", type=int, default=0, help="chat users (a fixed count; 0: weighted)"
    )
    g.add_argument(
        "--chat-max-tokens", type=int, default=64, help="max_tokens of each chat completion"
    )
    g.add_argument(
        "--chat-think-s", type=float, default=1.0, help="mean pause between one user's chats"
    )
    g.add_argument(
        "--chat-model", default="", help="model to ask for (default: the first of /v1/models)"
    )
    g.add_argument(
        "--page-users", type=int, default=0, help="streamed-page users (a fixed count; 0: weighted)"
    )
    g.add_argument(
        "--page-delays", default="300,100,200", help="the delays= of GET /suspense, in ms"
    )
    g.add_argument(
        "--page-think-s", type=float, default=1.0, help="mean pause between one user's page loads"
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds a chat or page request may wait for any one read",
    )
    g.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="RampHold shape: seconds to hold the load once every user is spawned and every "
        "subscriber connected, then stop (0: run until --run-time or Ctrl+C)",
    )
    g.add_argument(
        "--ramp-timeout",
        type=float,
        default=300.0,
        help="RampHold shape: seconds the ramp may take before the hold starts anyway "
        "(run_load.py then fails the run on the subscribers that never connected)",
    )
    g.add_argument(
        "--summary-json", default="", help="write the subscriber tally here when Locust quits"
    )


def _sampler() -> None:
    # Bounded by the process: Locust kills greenlets on quit; also capped in count.
    for _ in range(int(7 * 24 * 3600 / SAMPLE_EVERY_S)):
        TALLY.sample()
        gevent.sleep(SAMPLE_EVERY_S)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    TALLY.stopping = False
    gevent.spawn(_sampler)


@events.test_stopping.add_listener
def _on_test_stopping(environment: Environment, **_kw: Any) -> None:
    TALLY.sample()
    TALLY.stopping = True
    TALLY.hold_ended_at = time.time()
    TALLY.at_stop = {"subscribers": TALLY.subscribers, "connected": TALLY.connected}


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw: Any) -> None:
    TALLY.lost = DELIVERIES.lost()
    path = (
        getattr(environment.parsed_options, "summary_json", "")
        if environment.parsed_options
        else ""
    )
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(TALLY.as_dict(), f, indent=2)
            f.write("\n")


class RequestUser(User):
    """A user that makes one request at a time on its own keep-alive connection,
    pausing about ``think_s`` (the option named by ``think_option``) between them."""

    abstract = True
    think_option = ""

    def wait_time(self) -> float:
        return random.uniform(0.5, 1.5) * self.think_s

    def on_start(self) -> None:
        self.host_name, self.port = host_port(self.host)
        options = self.environment.parsed_options
        self.think_s = getattr(options, self.think_option) if options else 1.0
        timeout_s = options.request_timeout if options else 30.0
        self.conn = Connection(self.host_name, self.port, timeout_s=timeout_s)

    def on_stop(self) -> None:
        self.conn.close()
