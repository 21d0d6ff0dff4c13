"""Channels: ids, history, resume and fan-out, behind one engine interface.

Nothing in this package knows HTTP. ``engine.py`` is the interface every engine
provides and the resume algorithm they share; ``memory.py`` is the in-process
engine, the default; ``redis.py`` shares channels between processes and nodes
through Redis (an optional extra, imported only when configured).
"""

from __future__ import annotations

from .engine import (
    ChannelLimitError,
    EncodedEvent,
    Engine,
    EngineUnavailableError,
    EventTooLargeError,
    IdempotencyKeyReusedError,
    Published,
    Reset,
    Subscriber,
    Subscription,
    parse_event_id,
)
from .memory import MemoryEngine

__all__ = [
    "ChannelLimitError",
    "EncodedEvent",
    "Engine",
    "EngineUnavailableError",
    "EventTooLargeError",
    "IdempotencyKeyReusedError",
    "MemoryEngine",
    "Published",
    "Reset",
    "Subscriber",
    "Subscription",
    "parse_event_id",
]
