"""Publisher: POST /channels/{name}/events at a steady pace, the body led by time.time_ns().

Plain request/response over keep-alive, so this one is Locust's FastHttpUser and
Locust times it itself (request type POST, name /channels/[name]/events).
Each publisher walks the channels in turn, starting at its own offset, so with
P publishers every channel gets P / (interval * channels) events a second.
With ``--publish-host`` (repeated) the publishers take the servers in turn instead
of --host: with nodes behind a load balancer, every node publishes.
Every accepted event's sequence number goes to ``DELIVERIES`` (the lost-event count).
"""

from __future__ import annotations

import itertools
import time

from locust import FastHttpUser, constant_pacing, task
from locust.env import Environment

from sse_server.channels import parse_event_id

from .common import DELIVERIES
from .subscriber import channel_name

__all__ = ["Publisher"]

_next_publisher = itertools.count()
_next_host = itertools.count()


class Publisher(FastHttpUser):
    weight = 1
    wait_time = constant_pacing(0.5)  # locustfile.py applies --publish-interval

    def __init__(self, environment: Environment) -> None:
        hosts = environment.parsed_options.publish_host if environment.parsed_options else []
        if hosts:
            self.host = hosts[next(_next_host) % len(hosts)]  # read by FastHttpUser.__init__
        super().__init__(environment)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.channels = max(1, options.channels if options else 10)
        self.padding = (
            " " + "x" * options.event_bytes if options and options.event_bytes > 0 else ""
        )
        self.turn = next(_next_publisher)

    @task
    def publish(self) -> None:
        channel = channel_name(self.turn % self.channels)
        self.turn += 1
        body = f"{time.time_ns()}{self.padding}"  # ASCII: sent as is
        with self.client.post(
            f"/channels/{channel}/events",
            name="/channels/[name]/events",
            data=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(f"status {response.status_code}")
                return
            try:
                reply = response.json()
            except ValueError:
                response.failure("202 without a JSON body")
                return
            if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
                response.failure("202 without an event id")
                return
            parsed = parse_event_id(reply["id"])
            if parsed is None:
                response.failure(f"202 with an id that is not <epoch>-<seq>: {reply['id'][:40]!r}")
                return
            DELIVERIES.accepted[channel].append(parsed[1])
