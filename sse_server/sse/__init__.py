"""Server-Sent Events: the pure encoder and WHATWG parser (``codec``) and the
streaming responses built on them (``sse_server.sse.streams``).

Importing this package gives the codec only; it imports nothing of the server.
"""

from __future__ import annotations

from .codec import (
    Event,
    EventStreamError,
    EventStreamParser,
    encode_comment,
    encode_event,
    encode_retry,
    parse_events,
)

__all__ = [
    "Event",
    "EventStreamError",
    "EventStreamParser",
    "encode_comment",
    "encode_event",
    "encode_retry",
    "parse_events",
]
