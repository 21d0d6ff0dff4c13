"""Reading a test server's access log: it writes batches to a stream, not through logging."""

from __future__ import annotations

import io

from sse_server import Server

__all__ = ["access_lines", "capture"]


def capture(server: Server) -> io.StringIO:
    """Point the server's access log at a buffer (before any request is sent)."""
    assert server.access_log is not None, "the access log is off"
    server.access_log.stream = io.StringIO()
    return server.access_log.stream


def access_lines(server: Server) -> list[str]:
    """The lines written so far, pending ones flushed first."""
    assert server.access_log is not None and isinstance(server.access_log.stream, io.StringIO)
    server.access_log.flush()
    return server.access_log.stream.getvalue().splitlines()
