"""The one way tests wait for server-side state: poll a predicate under a deadline.

Server bookkeeping (an unsubscribe after a client left, a job swept by a timer)
catches up on the event loop; yielding to it in short steps until the predicate
holds is deterministic, where a fixed ``sleep`` is a guess.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    """Return once ``check()`` holds; fail the test with ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not true after {timeout_s}s: {what or check}") from None
