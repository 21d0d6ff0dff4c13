"""The process's descriptor limit, and what the server can hold within it.

Each connection is a file descriptor. A server that runs out of them cannot even
accept a connection to say 503, and the event loop's accept path then logs a
traceback per failed accept (thousands a second). So at start the soft
``RLIMIT_NOFILE`` is raised to the hard limit where allowed, and the connection cap
is kept below it with a reserve for listeners, upstream connections, logs and the
connections that are accepted only to be told 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["EmfileLog", "connection_cap", "raise_nofile_limit"]

log = logging.getLogger("sse_server")

_RESERVE_FRACTION = 0.05
_MIN_RESERVE = 32


def raise_nofile_limit() -> int | None:
    """Raise the soft descriptor limit to the hard one; return the soft limit now in force
    (None where the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass  # not allowed here: keep the soft limit
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(wanted: int, nofile: int | None) -> int:
    """``wanted`` connections, or fewer so that ``nofile`` descriptors always leave a reserve."""
    if nofile is None:
        return wanted
    reserve = max(_MIN_RESERVE, int(nofile * _RESERVE_FRACTION))
    return max(1, min(wanted, nofile - reserve))


class EmfileLog:
    """A loop exception handler that reports running out of descriptors once per interval.

    The event loop calls its exception handler for every accept that fails with EMFILE
    (and retries each a second later); everything else goes to the handler that was
    there before.
    """

    _ERRNOS = frozenset({23, 24, 105, 12})  # ENFILE, EMFILE, ENOBUFS, ENOMEM

    def __init__(self, previous: Callable[[Any, dict[str, Any]], object] | None, interval_s: float = 10.0) -> None:
        self.previous = previous
        self.interval_s = interval_s
        self.suppressed = 0
        self._last = -interval_s

    def __call__(self, loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in self._ERRNOS and "accept" in str(context.get("message", "")):
            now = time.monotonic()
            if now - self._last >= self.interval_s:
                log.error("out of file descriptors: cannot accept connections (%s); %d such errors since "
                          "the last report", exc.strerror, self.suppressed)
                self._last, self.suppressed = now, 0
            else:
                self.suppressed += 1
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)
