"""A real nginx for the tests, on the shipped config (loadtests/nginx/sse.conf.template).

    with NginxServer(tmp_path, nodes=["127.0.0.1:8001", ...], tls=tls_files) as nginx:
        nginx.plain_port (HTTP/1.1), nginx.tls_port (HTTP/2 + TLS), nginx.error_log()

It runs in the foreground as one process in its own prefix (config, pid, logs and
temp folders under ``directory``) on free ports, and is stopped with SIGTERM (then
SIGKILL). Without Debian's nginx (``tests/run.sh`` installs it) the tests skip,
unless REQUIRE_NGINX=1 makes that a failure (CI).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import pytest

from .conftest import TLSFiles
from .processes import REPO, free_port

__all__ = ["NginxServer", "render_module", "require_nginx"]

START_TIMEOUT_S = 10.0


@functools.cache
def render_module() -> ModuleType:
    """loadtests/nginx/render.py (loadtests/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("sse_nginx_render", REPO / "loadtests" / "nginx" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_nginx() -> str:
    """The nginx binary; skip (or fail, with REQUIRE_NGINX=1) when there is none."""
    found: str | None = render_module().find_nginx()
    if found is None:
        message = "needs nginx (apt-get install nginx; tests/run.sh does)"
        if os.environ.get("REQUIRE_NGINX") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


class NginxServer:
    def __init__(self, directory: Path, nodes: list[str], tls: TLSFiles) -> None:
        self.binary = require_nginx()
        self.directory = directory / "nginx"
        self.plain_port = free_port()
        self.tls_port = free_port()
        self.conf = render_module().prepare(
            self.directory, nodes,
            plain_listen=f"127.0.0.1:{self.plain_port}", tls_listen=f"127.0.0.1:{self.tls_port}",
            certfile=tls.certfile, keyfile=tls.keyfile,
        )  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: BinaryIO | None = None

    def start(self) -> None:
        """Start it and return once both listeners accept connections (bounded)."""
        argv: list[str] = render_module().command(self.conf, self.binary)
        self._stderr = open(self.directory / "stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in (self.plain_port, self.tls_port):
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"nginx exited with {self.proc.returncode} at start: {self.error_log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise AssertionError(f"nginx not listening on {port} after {START_TIMEOUT_S}s") from None
                    time.sleep(0.01)

    def error_log(self) -> str:
        """What nginx wrote to stderr and to its error log so far."""
        return "".join(
            (self.directory / name).read_text(errors="replace")
            for name in ("stderr.log", "error.log") if (self.directory / name).exists()
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()  # nginx's fast shutdown: open streams are cut
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
