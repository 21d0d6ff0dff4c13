"""Locust load tests for sse_server's demo app (see loadtests/README.md).

    python -m sse_server --port 8000 --log-level warning &
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless \
        --users 1000 --spawn-rate 200 --run-time 60s SSESubscriber Publisher

User classes (one module each in locust_users/):
  SSESubscriber  holds a channel stream; connect, first event, publish-to-receive
  Publisher      POST /channels/{name}/events with time.time_ns() in the body
  ChatUser       streamed /v1/chat/completions; time to first token, tokens/s, total
  PageUser       GET /suspense?delays=...; first byte, shell, whole page

The RampHold shape spawns --users at --spawn-rate as Locust always does, starts
the hold once every user is spawned and every subscriber connected, and with
--hold S stops the test S seconds later, so "held for S seconds" means exactly
that whatever the ramp took. ``python loadtests/run_load.py`` runs all of this
against a server it starts, and checks the results.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape, constant_pacing, events
from locust.env import Environment

if importlib.util.find_spec("sse_server") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust_users.chat import ChatUser  # noqa: E402
from locust_users.common import TALLY  # noqa: E402
from locust_users.pages import PageUser  # noqa: E402
from locust_users.publisher import Publisher  # noqa: E402
from locust_users.subscriber import SSESubscriber  # noqa: E402

__all__ = ["ChatUser", "PageUser", "Publisher", "RampHold", "SSESubscriber"]


@events.init.add_listener
def _apply_options(environment: Environment, **_kw: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    Publisher.wait_time = constant_pacing(options.publish_interval)  # type: ignore[method-assign]
    # A fixed count takes that many users off the top of --users; the weighted
    # classes (the subscribers, in a mixed run) share the rest.
    for user_class, count in (
        (Publisher, options.publishers),
        (ChatUser, options.chat_users),
        (PageUser, options.page_users),
    ):
        user_class.fixed_count = max(0, count)


class RampHold(LoadTestShape):
    """--users at --spawn-rate, then hold for --hold seconds (0: until --run-time)."""

    # --users and --spawn-rate keep their meaning. --run-time is checked here: in a
    # headless run Locust arms its own --run-time timer only after a shape ends.
    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.hold_started_s: float | None = None

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        assert options is not None
        users = int(options.num_users or 1)
        spawn_rate = float(options.spawn_rate or 1)
        now = time.perf_counter()
        if options.run_time and self.get_run_time() >= options.run_time:
            return None
        if self.hold_started_s is None:
            ramped = self.runner.user_count >= users and TALLY.connected >= TALLY.subscribers
            if ramped or self.get_run_time() > options.ramp_timeout:
                self.hold_started_s = now
                TALLY.start_hold()
        elif options.hold > 0 and now - self.hold_started_s >= options.hold:
            return None
        return users, spawn_rate
