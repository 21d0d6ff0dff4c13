"""Servers as users run them: ``python -m sse_server ...`` in a child process.

    node = await start_cli(tmp_path, "--backplane", redis.url)   # returns once it serves
    node.url, node.port, node.lines (its stderr so far)
    await node.stop()                                             # SIGTERM, bounded wait

The child imports this checkout (not whatever is installed) and, through
PYTHONPATH, modules in the folder it runs in (``--app userapp:app``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

__all__ = ["REPO", "Running", "env_for", "free_port", "start_cli"]

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nobody listens on now (for a child that must be told its port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env_for(folder: Path) -> dict[str, str]:
    """The environment for a child: the repository and ``folder`` importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(folder), env.get("PYTHONPATH", "")])
    return env


class Running:
    """A server child process and where it said it is serving."""

    def __init__(self, proc: asyncio.subprocess.Process, host: str, port: int, lines: list[str]) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.lines = lines  # every stderr line so far, kept by a drain task
        self.drained: asyncio.Task[None] | None = None  # done once stderr reached EOF

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Send ``sig`` (if still running) and wait, bounded, for the exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(timeout_s):
            status = await self.proc.wait()
            if self.drained is not None:
                await self.drained
        return status


async def start_cli(folder: Path, *args: str, port: int = 0, timeout_s: float = 15.0) -> Running:
    """Start ``python -m sse_server --port PORT ARGS`` in ``folder`` and wait (bounded)
    for its "serving on" line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_server", "--port", str(port), *args,
        cwd=folder, env=env_for(folder),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"server exited before serving: {''.join(lines)}")
                lines.append(raw.decode())
                m = re.search(r"serving on https?://\[?([^\s\]]+?)\]?:(\d+)", lines[-1])
                if m:
                    break
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise

    async def drain() -> None:
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            lines.append(raw.decode())

    running = Running(proc, m.group(1), int(m.group(2)), lines)
    running.drained = asyncio.ensure_future(drain())
    return running
