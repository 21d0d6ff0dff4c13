"""A real redis-server for the tests: a free port, a temp dir, no persistence.

    async with RedisServer(tmp_path) as redis: ...     # redis.url, pause(), resume(), restart()

Without Debian's ``redis-server`` (``tests/run.sh`` installs it) or redis-py the
tests skip, unless REQUIRE_REDIS=1 makes that a failure (CI).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .processes import free_port

__all__ = ["RedisServer", "require_redis"]


def require_redis() -> None:
    """Skip (or fail, with REQUIRE_REDIS=1) when redis-server or redis-py is missing."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server (apt-get install redis-server; tests/run.sh does)")
    try:
        import redis  # noqa: F401
    except ImportError:
        missing.append("redis-py (pip install 'sse_server[redis]')")
    if missing:
        message = "needs " + " and ".join(missing)
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it (empty) and return once it answers PING."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.write(b"PING\r\n")
                    if (await reader.readline()).startswith(b"+PONG"):
                        writer.close()
                        return
                    writer.close()
                except OSError:
                    pass
                assert self.proc.poll() is None, "redis-server exited at start"
                await asyncio.sleep(0.01)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGKILL's aftermath
            proc.kill()
            proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a stalled Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def restart(self) -> None:
        """Killed and started again on the same port, with no data (a lost Redis)."""
        self.stop()
        await self.start()

    async def client(self) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.url)

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
