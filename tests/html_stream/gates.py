"""Boundaries that complete when a test says so (asyncio.Event, no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from html_stream.markup import Node


@dataclass
class Gate:
    """One boundary's content: records that it started, waits for `go`, then returns."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False

    def content(self, make: Callable[[], Node]) -> Callable[[], Awaitable[Node]]:
        async def run() -> Node:
            self.started.set()
            try:
                await self.go.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            self.done.set()
            return make()

        return run

    def fail(self, exc: BaseException) -> Callable[[], Awaitable[Node]]:
        async def run() -> Node:
            self.started.set()
            await self.go.wait()
            self.done.set()
            raise exc

        return run


async def release(gates: list[Gate]) -> None:
    """Open the gates in this order, each one's content returned before the next opens
    (a gate whose boundary has not started yet completes as soon as it starts)."""
    for gate in gates:
        gate.go.set()
        if gate.started.is_set():
            await gate.done.wait()
