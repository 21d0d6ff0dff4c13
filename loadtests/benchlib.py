"""Shared helpers for the benchmark scripts in loadtests/.

Strategy: every server under test runs as its own process group, pinned to one
CPU with ``taskset``, and is probed from outside: readiness by polling
``/healthz``, memory from ``/proc/PID/status`` (VmRSS), CPU from
``/proc/PID/stat`` (utime + stime). The load generator pins itself to the other
CPU, so the server's CPU time is the cost we compare and the client's work does
not steal from it.

The client side is raw asyncio: ``StreamClient`` is a Protocol that sends one
GET, parses the response head and de-chunks the body (``ChunkedDecoder``), and
``HttpConnection`` does keep-alive request/response for publishing. No HTTP
library sits between the load generator and the bytes, so it stays cheap and
sees exactly what each server sends.

Servers are described by command templates (tuples of argv strings) in which
``{python}``, ``{port}`` and ``{peers}`` are replaced; a server that does not
come up is reported and skipped by the caller, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sse_server.http11 import ChunkedDecoder, ProtocolError  # pure; ProtocolError on bad framing

__all__ = [
    "HOST",
    "LOADTESTS_DIR",
    "OUR_SERVER",
    "PEERS_DIR",
    "REPO_ROOT",
    "ChunkedDecoder",
    "ProtocolError",
    "RedisProcess",
    "Column",
    "CoreMeter",
    "DataLineClient",
    "HttpConnection",
    "SSEEventCounter",
    "ServerDidNotStart",
    "ServerFailed",
    "ServerProcess",
    "StreamClient",
    "close_clients",
    "parse_headers",
    "variant_server",
    "core_busy_seconds",
    "cpu_seconds",
    "cpu_seconds_fine",
    "exit_on_sigterm",
    "free_port",
    "line_ending",
    "markdown_table",
    "median",
    "open_clients",
    "percentile",
    "pin_self",
    "raise_nofile_limit",
    "require_modules",
    "rss_kib",
    "select_servers",
    "settled",
    "wait_for_count",
    "warn_if_shared",
]

LOADTESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = LOADTESTS_DIR.parent
PEERS_DIR = LOADTESTS_DIR / "peers"
HOST = "127.0.0.1"  # every benchmark stays on loopback

# How our server is started; the first entry of every server table.
OUR_SERVER = (
    "{python}", "-m", "sse_server",
    "--host", HOST, "--port", "{port}", "--log-level", "warning",
)  # fmt: skip

PEER_INSTALL_HINT = "pip install -r loadtests/requirements-peers.txt"


# --------------------------------------------------------------------------- setup


def require_modules(modules: Iterable[str]) -> None:
    """Exit with an install hint if a peer package the benchmark needs is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(
            f"missing benchmark peers: {', '.join(missing)}\ninstall them with: {PEER_INSTALL_HINT}"
        )


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally:` blocks stop the servers we started."""

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


def raise_nofile_limit(needed: int) -> None:
    """Lift this process's open-file soft limit toward `needed` (bounded by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        print(
            f"warning: open-file limit {soft} < {needed} sockets needed; raise ulimit -n",
            file=sys.stderr,
        )


def pin_self(cpu: int) -> None:
    """Pin the load generator (this process) to one CPU."""
    os.sched_setaffinity(0, {cpu})


def variant_server(spec: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=ARGS`` -> this repo's sse_server with extra flags (``auth=--jwt-secret-env S``)."""
    name, sep, extra = spec.partition("=")
    if not sep or not name:
        sys.exit(f"--variant wants NAME=ARGS, got {spec!r}")
    return name, (*OUR_SERVER, *shlex.split(extra))


def parse_headers(specs: Iterable[str]) -> dict[str, str]:
    """``--header 'Name: value'`` flags -> a dict; exits on one without a colon."""
    headers = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        if not sep or not name.strip():
            sys.exit(f"--header wants 'Name: value', got {spec!r}")
        headers[name.strip()] = value.strip()
    return headers


def select_servers(
    table: Mapping[str, tuple[str, ...]], only: Sequence[str] | None
) -> dict[str, tuple[str, ...]]:
    """The servers named by --only (in table order), or all of them."""
    if not only:
        return dict(table)
    wanted = {name for arg in only for name in arg.split(",") if name}
    unknown = wanted - table.keys()
    if unknown:
        sys.exit(f"unknown server(s) {sorted(unknown)}; known: {list(table)}")
    return {name: cmd for name, cmd in table.items() if name in wanted}


# ------------------------------------------------------------------- the server process


def free_port() -> int:
    """A port nothing listens on right now (bind to 0, read it, release it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerFailed(Exception):
    """A server under test misbehaved (did not come up, died, answered wrongly)."""


class ServerDidNotStart(ServerFailed):
    """The server's command did not bring up a /healthz that answers 200."""


def _render(template: Sequence[str], port: int) -> list[str]:
    # str.replace, not str.format: templates may hold code with braces (node -e).
    values = {"{python}": sys.executable, "{port}": str(port), "{peers}": str(PEERS_DIR)}
    out = []
    for arg in template:
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


class ServerProcess:
    """One server under test: started pinned to a CPU, in its own process group.

        with ServerProcess("starlette", template, cpu=0) as server:
            ... server.port, server.pid ...

    Entering waits for GET /healthz to answer 200 (bounded tries) and raises
    ServerDidNotStart otherwise; leaving stops the whole process group
    (SIGTERM, then SIGKILL after a grace period).
    """

    def __init__(
        self,
        name: str,
        template: Sequence[str],
        *,
        cpu: int = 0,
        extra_args: Sequence[str] = (),
        health_tries: int = 100,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.argv = ["taskset", "-c", str(cpu), *_render(template, self.port), *extra_args]
        self.health_tries = health_tries
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives __init__; closed in stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # taskset execs the command, so this is the server's pid

    def __enter__(self) -> ServerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we stop all of it
            )
        except OSError as exc:
            self._log.close()
            raise ServerDidNotStart(f"{self.name}: cannot start {self.argv[3]!r}: {exc}") from exc
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        for _ in range(self.health_tries):
            if self.proc.poll() is not None:
                raise ServerDidNotStart(
                    f"{self.name}: exited with {self.proc.returncode} before /healthz answered: "
                    f"{self.log_tail()}"
                )
            if _healthz_ok(self.port, timeout_s=0.5):
                return
            time.sleep(0.1)
        raise ServerDidNotStart(
            f"{self.name}: /healthz did not answer 200 after {self.health_tries} tries: "
            f"{self.log_tail()}"
        )

    def log_text(self) -> str:
        """Everything the server has printed so far ("" once it has been stopped)."""
        if self._log.closed:
            return ""
        # pread, not seek+read: the server writes through the same open file, so
        # moving its offset back would make the server overwrite its own log.
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def log_tail(self, lines: int = 3) -> str:
        """The last lines the server printed, for a failure message."""
        if self._log.closed:
            return ""
        text = self.log_text().strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the server's process group: SIGTERM, wait (bounded), then SIGKILL.

        The leader is reaped only after the group has been killed: while it is
        an unreaped zombie its pid, and so the group id, cannot be reused, so
        the signals never reach anybody else's processes.
        """
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for _ in range(int(grace_s / 0.05) + 1):
                if _exited_unreaped(proc.pid) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a leader that ignored SIGTERM, stray children
            proc.wait(timeout=grace_s)
        if not self._log.closed:
            self._log.close()


def _exited_unreaped(pid: int) -> bool:
    """Whether our child has exited, without reaping it (WNOWAIT)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _healthz_ok(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


class RedisProcess:
    """A redis-server for the backplane rows: a free port, a temp dir, no persistence, on ``cpu``.

    Exits with an install hint when there is no redis-server; ``stop()`` ends it
    (SIGTERM, then SIGKILL after a grace period) and removes its directory.
    """

    def __init__(self, cpu: int) -> None:
        if shutil.which("redis-server") is None:
            sys.exit("the Redis rows need redis-server (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), "redis-server", "--port", str(self.port), "--bind", HOST,
             "--save", "", "--appendonly", "no", "--dir", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)  # a child process coming up: bounded tries
        self.stop()
        sys.exit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid  # taskset execs redis-server

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace_s)
        self.dir.cleanup()


# -------------------------------------------------------------------- /proc readings

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise ServerFailed(f"pid {pid}: no VmRSS (exited?)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, seconds (/proc/PID/stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields we want follow its ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_fine(pid: int) -> float:
    """The same user + system total as cpu_seconds, to the nanosecond when the kernel says.

    /proc/PID/stat counts 10 ms ticks; /proc/PID/schedstat's first field is the
    time the task ran, in ns (the kernel scales utime and stime to add up to
    it). Falls back to cpu_seconds where schedstat is missing or reads 0.
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            ran_ns = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ran_ns = 0
    return ran_ns / 1e9 if ran_ns else cpu_seconds(pid)


def core_busy_seconds() -> list[float]:
    """Seconds each CPU has spent busy (user, nice, system, steal), from /proc/stat."""
    busy = []
    with open("/proc/stat", "rb") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith(b"cpu") or name == b"cpu":
                continue
            user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, fields[:8])
            busy.append((user + nice + system + steal) / CLK_TCK)
    return busy


class CoreMeter:
    """How busy the benchmark's CPUs were with work that was not ours.

    The machine may be shared: busy time on a pinned CPU beyond what the server
    and the load generator used there belongs to someone else, and the figures
    of that run are worth less.

        meter = CoreMeter([0, 1])
        ...
        meter.foreign_pct({0: server_cpu_s, 1: client_cpu_s})  # -> e.g. 3.0
    """

    def __init__(self, cpus: Sequence[int]) -> None:
        self.cpus = list(cpus)
        self._start = time.monotonic()
        self._busy = core_busy_seconds()

    def foreign_pct(self, own_s: Mapping[int, float]) -> float:
        """Largest share of wall time (%) any of the CPUs spent outside own_s[cpu]."""
        wall = time.monotonic() - self._start
        busy = core_busy_seconds()
        if wall <= 0 or max(self.cpus) >= len(busy):
            return 0.0
        return max(
            100 * max(0.0, busy[c] - self._busy[c] - own_s.get(c, 0.0)) / wall for c in self.cpus
        )


def warn_if_shared(foreign_pct: float, threshold_pct: float = 10.0) -> None:
    """Print a warning under a table when other processes used the benchmark's CPUs."""
    if foreign_pct > threshold_pct:
        print(
            f"\nwarning: other processes used up to {foreign_pct:.0f}% of a benchmark CPU; "
            "these figures are disturbed, rerun on an idle machine"
        )


# ------------------------------------------------------------------------ statistics


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def wait_for_count(
    count: Callable[[], int],
    target: int,
    *,
    stall_s: float,
    timeout_s: float,
    interval_s: float = 0.05,
) -> bool:
    """Poll count() until it reaches target; give up after stall_s without progress
    or timeout_s in all. Returns whether target was reached."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last, last_change = count(), loop.time()
    for _ in range(int(timeout_s / interval_s) + 1):
        now = count()
        if now >= target:
            return True
        if now != last:
            last, last_change = now, loop.time()
        if loop.time() - last_change > stall_s or loop.time() > deadline:
            break
        await asyncio.sleep(interval_s)
    return count() >= target


async def settled(
    read: Callable[[], float],
    *,
    window: int = 4,
    tolerance: float,
    interval_s: float = 0.25,
    timeout_s: float = 15.0,
) -> float:
    """Poll read() until `window` consecutive readings lie within `tolerance` of each
    other (or timeout_s passes); returns the last reading. For RSS after a burst of
    connections, which keeps moving while the server finishes setting them up."""
    readings = [read()]
    for _ in range(int(timeout_s / interval_s)):
        if (
            len(readings) >= window
            and max(readings[-window:]) - min(readings[-window:]) <= tolerance
        ):
            break
        await asyncio.sleep(interval_s)
        readings.append(read())
    return readings[-1]


# ----------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Column:
    """One metric in a results table; ratio=True adds a "vs <baseline>" column after it."""

    key: str
    header: str
    fmt: str = "{:,.1f}"
    ratio: bool = False


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return fmt.format(value)


def markdown_table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[Column], *, baseline: str | None
) -> str:
    """Render rows {server: {key: value}} as markdown; ratios are value / baseline's value.

    Missing values print as "-"; without a baseline row there are no ratio columns.
    """
    if baseline not in rows:  # no reference row, so no ratio columns
        baseline = None
    base = rows[baseline] if baseline else {}
    headers = ["server"]
    for col in columns:
        headers.append(col.header)
        if col.ratio and baseline:
            headers.append(f"vs {baseline}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, row in rows.items():
        cells = [name]
        for col in columns:
            value = row.get(col.key)
            cells.append(_cell(value, col.fmt))
            if col.ratio and baseline:
                ref = base.get(col.key)
                if isinstance(value, (int, float)) and isinstance(ref, (int, float)) and ref:
                    cells.append(f"{value / ref:.2f}x")
                else:
                    cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------- HTTP/1.1 client pieces


def line_ending(buf: bytes) -> bytes | None:
    """The line ending a stream uses, from its first one; None if not decidable yet.

    WHATWG "Parsing an event stream": lines end with CRLF, LF or a lone CR.
    """
    i = next((j for j, b in enumerate(buf) if b in b"\r\n"), -1)
    if i < 0 or (buf[i] == 13 and i + 1 == len(buf)):
        return None
    if buf[i] == 10:
        return b"\n"
    return b"\r\n" if buf[i + 1] == 10 else b"\r"


class SSEEventCounter:
    """Counts the SSE events in a (de-chunked) body fed in arbitrary pieces.

    An event is a block ended by a blank line that holds at least one data line
    (WHATWG: a block without data dispatches nothing, e.g. a heartbeat comment
    or a lone retry:). The line ending is taken from the stream's first line.
    Only complete blocks are counted; the unfinished tail waits for the next
    piece, so a block split across reads counts once.

    Fast path (two C-level byte counts per field name): when every line of a
    piece's complete blocks is an id:, event: or data: line and there are as
    many data lines as blocks, each block is one event. Anything else (comments,
    retry:, multi-line data) splits the blocks and checks them one by one. The
    fast path would miscount only a block of nothing but id:/event: lines read
    together with a multi-line data block, which no server sends.
    """

    __slots__ = ("_rest", "_sep", "events")

    def __init__(self) -> None:
        self.events = 0
        self._rest = b""
        self._sep: bytes | None = None

    def feed(self, data: bytes) -> None:
        buf = self._rest + data if self._rest else data
        if self._sep is None:
            self._sep = line_ending(buf[:65536]) or (b"\n" if len(buf) > 65536 else None)
            if self._sep is None:
                self._rest = buf
                return
        sep = self._sep
        blank = sep * 2
        end = buf.rfind(blank)
        if end < 0:
            self._rest = buf
            return
        end += len(blank)
        self._rest = buf[end:]
        blocks = buf.count(blank, 0, end)
        data_line = sep + b"data:"
        data_lines = buf.count(data_line, 0, end) + buf.startswith(b"data:")
        nonblank_lines = buf.count(sep, 0, end) - blocks
        plain_lines = (
            data_lines + buf.count(sep + b"id:", 0, end) + buf.startswith((b"id:", b"event:"))
        )
        if plain_lines < nonblank_lines:  # event: lines are rarer; count them only if needed
            plain_lines += buf.count(sep + b"event:", 0, end)
        if data_lines == blocks and plain_lines == nonblank_lines:
            self.events += blocks
        else:
            self.events += sum(
                1 for b in buf[:end].split(blank) if b.startswith(b"data:") or data_line in b
            )


class StreamClient(asyncio.Protocol):
    """One HTTP/1.1 GET on its own connection, body handed to body_received().

    Subclasses override body_received (de-chunked payload) and body_ended. The
    ``head`` future resolves to the response status (0 if the connection died
    first), ``closed`` when the connection is gone.
    """

    __slots__ = ("_chunks", "_head_buf", "closed", "head", "request", "status", "transport")

    def __init__(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.head: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self._head_buf = b""
        self._chunks: ChunkedDecoder | None = None

    @staticmethod
    def get(path: str, headers: Mapping[str, str] | None = None) -> bytes:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.head.done():
            self._head_buf += data
            end = self._head_buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head_buf) > 65536:
                    self._fail()
                return
            head, data = self._head_buf[:end], self._head_buf[end + 4 :]
            self._head_buf = b""
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self._fail()
                return
            if b"\r\ntransfer-encoding: chunked" in head.lower():
                self._chunks = ChunkedDecoder()
            self.head.set_result(self.status)
            if not data:
                return
        if self._chunks is None:  # close-delimited body
            self.body_received(data)
            return
        payload = self._chunks.feed(data)
        if payload:
            self.body_received(payload)
        if self._chunks.done:
            self.body_ended()
            assert self.transport is not None
            self.transport.close()

    def _fail(self) -> None:
        if not self.head.done():
            self.head.set_result(0)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_result(0)
        if not self.closed.done():
            self.closed.set_result(None)

    def body_received(self, data: bytes) -> None:
        """Override: called with each piece of de-chunked body."""

    def body_ended(self) -> None:
        """Override: called once when a chunked body ends properly."""


class DataLineClient(StreamClient):
    """A StreamClient that hands the value of each complete ``data:`` line to data_line().

    Lines are cut at LF (CRLF leaves a trailing CR in the value); a line split
    across reads waits for its end. ``now_ns`` is time.time_ns() when the read
    arrived, the same for every line of it.
    """

    __slots__ = ("_partial",)

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self._partial = b""

    def body_received(self, data: bytes) -> None:
        now = time.time_ns()
        if self._partial:
            data = self._partial + data
        end = data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next read
        self._partial = data[end:]
        data_line = self.data_line
        i = data.find(b"data:", 0, end)
        while i >= 0:
            eol = data.find(b"\n", i, end)
            data_line(data[i + 5 : eol], now)
            i = data.find(b"data:", eol, end)

    def data_line(self, value: bytes, now_ns: int) -> None:
        """Override: one data line's value (after "data:", leading space included)."""


async def open_clients(
    factory: Callable[[], StreamClient],
    count: int,
    port: int,
    *,
    concurrency: int = 100,
    timeout_s: float = 10.0,
) -> tuple[list[StreamClient], int]:
    """Open `count` StreamClients and wait for each response head.

    Returns (clients whose head was 200, number that failed). At most
    `concurrency` connections are in their handshake at once, which keeps the
    server's accept backlog from overflowing (overflow costs 1 s SYN retries).
    """
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> StreamClient | None:
        async with gate:
            proto: StreamClient | None = None
            try:
                async with asyncio.timeout(timeout_s):
                    _, proto = await loop.create_connection(factory, HOST, port)
                    if await proto.head == 200:
                        return proto
            except (OSError, TimeoutError):
                pass
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
            return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    ok = [p for p in results if p is not None]
    return ok, count - len(ok)


async def close_clients(clients: Iterable[StreamClient], timeout_s: float = 5.0) -> None:
    """Close every client's connection and wait (bounded) until they are gone."""
    clients = list(clients)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(c.closed for c in clients))


class HttpConnection:
    """A keep-alive HTTP/1.1 connection for request/response traffic (publishing).

    async with HttpConnection(port) as conn:
        status, body = await conn.request("POST", "/channels/x/events", b"hi")
    """

    def __init__(self, port: int, timeout_s: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self._extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> HttpConnection:
        async with asyncio.timeout(self.timeout_s):
            self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.timeout_s):
                    await self._writer.wait_closed()

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        """Write one request (the caller then awaits response())."""
        assert self._writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self._extra}"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode("latin-1") + body)

    async def response(self) -> tuple[int, bytes]:
        """Read one response: status and body (Content-Length or chunked)."""
        assert self._reader is not None
        reader = self._reader
        async with asyncio.timeout(self.timeout_s):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            lower = head.lower()
            if b"\r\ntransfer-encoding: chunked" in lower:
                decoder, parts = ChunkedDecoder(), []
                while not decoder.done:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise ConnectionError("connection closed inside a chunked body")
                    parts.append(decoder.feed(chunk))
                return status, b"".join(parts)
            marker = lower.find(b"\r\ncontent-length:")
            if marker < 0:
                return status, b""
            length = int(lower[marker + 17 : lower.index(b"\r\n", marker + 2)])
            return status, await reader.readexactly(length)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.send(method, path, body)
        return await self.response()
