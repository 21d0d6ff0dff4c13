"""Descriptor limits: the connection cap keeps a reserve, and EMFILE is reported once per interval."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest

from sse_server.limits import EmfileLog, connection_cap


@pytest.mark.parametrize(
    ("wanted", "nofile", "cap"),
    [
        (15_000, None, 15_000),  # no limit known: as configured
        (15_000, 1_048_576, 15_000),  # plenty of descriptors
        (15_000, 256, 224),  # 32 kept for listeners, upstreams, logs and 503s
        (15_000, 20_000, 15_000),
        (30_000, 20_000, 19_000),  # 5% in reserve
        (10, 20, 1),  # never zero: the server still serves someone
    ],
)
def test_connection_cap_keeps_a_reserve(wanted: int, nofile: int | None, cap: int) -> None:
    """The cap is the configured count, lowered to leave a reserve of descriptors."""
    assert connection_cap(wanted, nofile) == cap


def test_emfile_on_accept_is_reported_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A storm of failed accepts is one log line per interval; other loop errors go to the previous handler."""
    passed_on: list[dict[str, Any]] = []
    handler = EmfileLog(lambda loop, context: passed_on.append(context), interval_s=3600)
    emfile = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.ERROR, logger="sse_server"):
        for _ in range(1000):
            handler(None, {"message": "socket.accept() out of system resource", "exception": emfile})
        handler(None, {"message": "something else", "exception": ValueError("x")})
    assert len([r for r in caplog.records if "out of file descriptors" in r.getMessage()]) == 1
    assert handler.suppressed == 999
    assert [c["message"] for c in passed_on] == ["something else"]
