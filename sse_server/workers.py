"""``--workers N``: one listening socket, N worker processes, a supervisor that keeps them.

    python -m sse_server --workers 2 --backplane redis://127.0.0.1:6379/0

Strategy. The supervisor binds one ``SO_REUSEPORT`` listening socket per worker
slot, all on the one port (``bind``), and starts each worker as a fresh interpreter
(``subprocess`` with ``pass_fds``, never ``fork``), so a worker started after a
SIGHUP runs the code on disk now. A worker parses the same flags, builds its own
App and serves on its slot's inherited socket (``Server.start(sock=...)``).

Why a socket per slot, held by the supervisor: the kernel spreads new connections
over the sockets by a hash of their addresses, so they land evenly whatever the
scheduler does (with one shared socket, the worker the kernel happens to wake first
took every connection of a burst: 20 of 20 on a busy machine). And because the
supervisor keeps each socket open, a worker that stops does not lose the
connections queued on its socket: its successor (a SIGHUP restart starts it before
the old one stops; a crash restarts it after 0.5 s) accepts them. Only a worker
that fails to start again has its socket closed until it does start, so that its
share of new connections goes to the others instead of waiting.

Two pipes tie each worker to the supervisor, and process groups keep signals apart:

- *ready*: the worker writes ``ready`` once it listens; a SIGHUP restart stops the
  old worker only after the new one said so, so the port always has a worker.
- *parent*: the supervisor holds the write end and never writes; the worker sees
  end-of-file when the supervisor dies in any way (SIGKILL included) and shuts
  down gracefully, so no worker outlives it.
- each worker runs in its own process group, so a Ctrl+C in a terminal reaches the
  supervisor only, which then stops the workers gracefully; a second Ctrl+C
  changes nothing (the stop is bounded anyway).

Signals to the supervisor: SIGTERM/SIGINT stop every worker (SIGTERM, then SIGKILL
past ``--shutdown-timeout`` plus a margin; exit 0 if every worker stopped by itself);
SIGHUP replaces the workers one at a time. A worker that dies is started again
after a back-off (0.5 s, doubling up to 30 s, back to 0.5 s once a worker has lived
30 s), so one that fails at start-up over and over costs a start every 30 s.

Metrics. Each worker also answers its own figures (``Metrics.collect()``, as JSON)
on a unix socket ``<dir>/<index>.sock`` in a 0700 directory the supervisor made. The
worker that is scraped fetches its siblings' over those sockets (1 s each, at once)
and answers every worker's samples labelled ``worker="<index>"``: per-worker
gauges and ``process_*`` figures mean something only that way, and Prometheus
sums counters with ``sum without (worker)``. ``sse_worker_up{worker}`` says which
workers' figures the scrape holds; a sibling that did not answer is 0 there, never
silently left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import Family, Sample, gauge, labelled, merge

if TYPE_CHECKING:
    from .app import App
    from .config import Config
    from .middleware.metrics import Metrics

__all__ = ["Supervisor", "bind", "supervise", "worker_main", "workers_refusal"]

log = logging.getLogger("sse_server.workers")

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0  # a worker that cannot start costs one start per this, not a spinning core
_STABLE_S = 30.0  # a worker that lived this long died of something new: restart it soon again
# Start-up hooks (a backplane's first contact) may take a while; past this a
# starting worker is stuck, and is killed like one that exited.
_READY_TIMEOUT_S = 60.0
# Past --shutdown-timeout a worker's server aborts what is left (1 s) and runs its
# shutdown hooks; only past this margin too is it killed.
_STOP_MARGIN_S = 5.0
_SIBLING_TIMEOUT_S = 1.0  # one slow worker must not stall the scrape (Prometheus waits 10 s by default)
_MAX_SIBLING_BYTES = 16 * 1024 * 1024  # a worker's figures are a few KiB; bounds what a scrape reads
# The worker entry point: -c rather than -m sse_server.workers, so this module is
# imported once under its own name.
_WORKER_CODE = "import sys; from sse_server.workers import worker_main; sys.exit(worker_main(sys.argv[1:]))"


def workers_refusal(app: App, config: Config) -> str | None:
    """Why ``app`` cannot be served by ``config.workers`` processes, or None.

    Channels in process memory (a ``MemoryEngine`` in ``app.state["engine"]``, what the
    demo has without ``--backplane``) would be one set per worker: a publish would
    reach only the subscribers of the worker that took it. Other in-process state of
    a user's app is the app's to share; it is served.
    """
    from .channels import MemoryEngine

    if config.workers > 1 and isinstance(app.state.get("engine"), MemoryEngine):
        return (f"--workers {config.workers} needs --backplane redis://HOST:PORT/DB: this app keeps its channels "
                "in process memory, so each worker would have its own and a publish would reach only the "
                "subscribers of the worker that took it")
    return None


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening ``SO_REUSEPORT`` TCP socket on the first address ``host`` resolves to
    (``port`` 0 picks one); more of them on the same port share its connections.

    Raises OSError when it cannot bind (in use, no such address).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does: rebind past TIME_WAIT
        # Only sockets of this user can join the port's group (Linux), so nobody else takes a share.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does for a single server
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _status_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"status {code}"


def supervise(argv: list[str], config: Config) -> int:
    """Bind, run ``config.workers`` workers serving ``argv`` until SIGTERM/SIGINT; the exit status.

    Raises OSError when the port cannot be bound.
    """
    first = bind(config.host, config.port, config.backlog)
    supervisor = Supervisor(argv, config, first)
    try:
        for index in range(1, config.workers):
            supervisor.open_slot(index)
        return asyncio.run(supervisor.run())
    finally:
        for sock in supervisor.socks:
            if sock is not None:
                sock.close()


@dataclass(slots=True, eq=False)
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    started_s: float  # loop time


class Supervisor:
    """Keeps ``config.workers`` processes serving the port of ``first`` (worker 0's socket);
    ``await run()`` until stopped."""

    def __init__(self, argv: list[str], config: Config, first: socket.socket) -> None:
        self.argv = list(argv)  # each worker parses the flags again: new code gets its own defaults
        self.config = config
        self.count = config.workers
        self.address: tuple[str, int] = first.getsockname()[:2]  # the real port when --port 0
        self.socks: list[socket.socket | None] = [first] + [None] * (self.count - 1)  # one per worker slot
        self.url = _url(first, tls=config.certfile is not None)
        self.workers: list[_Worker | None] = [None] * self.count
        self.killed = 0  # workers that had to be SIGKILLed at a stop
        self._backoff_s = [_BACKOFF_FIRST_S] * self.count
        self._locks = [asyncio.Lock() for _ in range(self.count)]  # one change of a worker slot at a time
        self._procs: set[asyncio.subprocess.Process] = set()  # every live child, starting ones included
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._restarting = False
        self._restart_again = False
        self._parent_r = -1
        self._parent_w = -1
        self.metrics_dir = ""

    # -- the life of the supervisor -----------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._parent_r, self._parent_w = os.pipe()
        self.metrics_dir = tempfile.mkdtemp(prefix="sse_server-workers-")  # 0700: this user only
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            log.info("listening on %s; starting %d workers", self.url, self.count)
            started = await asyncio.gather(*(self._start(i) for i in range(self.count)))
            if self._stopping.is_set():
                return await self._stop_all()
            if not all(started):
                log.error("a worker did not start (its error is above); stopping")
                await self._stop_all()
                return 1
            for worker in started:
                assert worker is not None
                self._install(worker)
            log.info("serving on %s (%d workers, supervisor pid %d; SIGHUP restarts them one at a time)",
                     self.url, self.count, os.getpid())
            await self._stopping.wait()
            return await self._stop_all()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in list(self._tasks):
                task.cancel()
            os.close(self._parent_w)
            os.close(self._parent_r)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def open_slot(self, index: int) -> socket.socket:
        """Worker ``index``'s listening socket, bound again if it was closed. Raises OSError."""
        sock = self.socks[index]
        if sock is None:
            sock = self.socks[index] = bind(self.address[0], self.address[1], self.config.backlog)
        return sock

    def _close_slot(self, index: int) -> None:
        sock, self.socks[index] = self.socks[index], None
        if sock is not None:
            sock.close()  # the connections queued on it are reset; new ones go to the other sockets
            log.warning("worker %d cannot start; the other workers take its share of new connections until it does",
                        index)

    def _on_stop_signal(self, sig: int) -> None:
        if self._stopping.is_set():
            log.info("%s: already stopping (at most %.0f s)", signal.Signals(sig).name, self._stop_bound_s)
            return
        log.info("%s: stopping %d workers", signal.Signals(sig).name, self.count)
        self._stopping.set()

    def _on_hup(self) -> None:
        if not self._stopping.is_set():
            self._spawn_task(self.restart_all())

    @property
    def _stop_bound_s(self) -> float:
        return self.config.shutdown_timeout_s + _STOP_MARGIN_S

    async def _stop_all(self) -> int:
        """Stop every child, bounded; 0 if each stopped by itself, 1 if one had to be killed."""
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        # A child started while this runs is in _procs by the time its start returns;
        # the loop catches it (bounded: nothing new starts once _stopping is set).
        for _ in range(3):
            procs = list(self._procs)
            if not procs:
                break
            await asyncio.gather(*(self._stop_proc(p) for p in procs))
        if self.killed:
            log.warning("stopped (%d workers had to be killed)", self.killed)
        else:
            log.info("stopped")
        return 1 if self.killed else 0

    async def _stop_proc(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM ``proc`` (its server shuts down gracefully), SIGKILL past the bound."""
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._stop_bound_s):
                await proc.wait()
        except TimeoutError:
            log.warning("worker pid %d still running %.0f s after SIGTERM; killing it", proc.pid, self._stop_bound_s)
            self.killed += 1
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._procs.discard(proc)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one worker -------------------------------------------------------------------------

    async def _start(self, index: int) -> _Worker | None:
        """Start worker ``index`` and wait until it serves; None if it exited or hung first."""
        if self._stopping.is_set():
            return None
        loop = asyncio.get_running_loop()
        try:
            listen_fd = self.open_slot(index).fileno()
        except OSError as e:
            log.error("worker %d: cannot bind %s again: %s", index, self.url, e)
            return None
        ready_r, ready_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WORKER_CODE,
                f"--index={index}", f"--listen-fd={listen_fd}", f"--ready-fd={ready_w}",
                f"--parent-fd={self._parent_r}", f"--metrics-dir={self.metrics_dir}", "--", *self.argv,
                pass_fds=(listen_fd, ready_w, self._parent_r),
                stdin=asyncio.subprocess.DEVNULL,
                process_group=0,  # a terminal's Ctrl+C reaches the supervisor, which stops the workers in order
            )
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)  # the worker holds the only write end: its exit is end-of-file here
        self._procs.add(proc)
        started_s = loop.time()
        log.info("worker %d started (pid %d)", index, proc.pid)
        if self._stopping.is_set():  # a stop came while it was being started
            os.close(ready_r)
            await self._stop_proc(proc)
            return None
        said = loop.create_future()

        def readable() -> None:
            loop.remove_reader(ready_r)
            try:
                data = os.read(ready_r, 64)
            except OSError:
                data = b""
            if not said.done():
                said.set_result(data)

        loop.add_reader(ready_r, readable)
        stopping = asyncio.ensure_future(self._stopping.wait())  # a stop does not wait for a slow start
        try:
            await asyncio.wait({said, stopping}, timeout=_READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            loop.remove_reader(ready_r)
            os.close(ready_r)
        data = said.result() if said.done() else b""
        if data.startswith(b"ready"):
            return _Worker(index, proc, started_s)
        if self._stopping.is_set():
            await self._stop_proc(proc)
            return None
        if not said.done():
            log.error("worker %d (pid %d) not ready after %.0f s; killing it", index, proc.pid, _READY_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        code = await proc.wait()
        self._procs.discard(proc)
        if not self._stopping.is_set():
            log.error("worker %d (pid %d) exited before it was ready (%s)", index, proc.pid, _status_text(code))
        return None

    def _install(self, worker: _Worker) -> None:
        self.workers[worker.index] = worker
        self._spawn_task(self._watch(worker))

    async def _watch(self, worker: _Worker) -> None:
        """Start ``worker`` again after a back-off if it exits while it is still the one serving."""
        code = await worker.proc.wait()
        self._procs.discard(worker.proc)
        if self._stopping.is_set() or self.workers[worker.index] is not worker:
            return  # stopped on purpose: a stop, or replaced by a restart
        index = worker.index
        loop = asyncio.get_running_loop()
        if loop.time() - worker.started_s >= _STABLE_S:
            self._backoff_s[index] = _BACKOFF_FIRST_S
        async with self._locks[index]:
            if self.workers[index] is not worker:
                return  # a restart replaced it meanwhile
            self.workers[index] = None
            log.warning("worker %d (pid %d) exited (%s)", index, worker.proc.pid, _status_text(code))
            while not self._stopping.is_set():
                delay_s = self._backoff_s[index]
                self._backoff_s[index] = min(delay_s * 2, _BACKOFF_MAX_S)
                log.info("starting worker %d again in %.1f s", index, delay_s)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await self._stopping.wait()
                new = await self._start(index)
                if new is not None:
                    self._install(new)
                    return
                self._close_slot(index)

    async def restart_all(self) -> None:
        """SIGHUP: replace each worker in turn by a new process, the port served throughout.

        The new worker must say it is ready before the old one is stopped; if it does
        not, the restart stops there and the running workers keep serving.
        """
        if self._restarting:
            log.info("SIGHUP: a restart is running; another follows it")
            self._restart_again = True
            return
        self._restarting = True
        try:
            again = True
            while again and not self._stopping.is_set():
                self._restart_again = False
                log.info("SIGHUP: restarting %d workers one at a time", self.count)
                for index in range(self.count):
                    if not await self._replace(index):
                        return
                log.info("restart done")
                again = self._restart_again
        finally:
            self._restarting = False

    async def _replace(self, index: int) -> bool:
        async with self._locks[index]:
            if self._stopping.is_set():
                return False
            old = self.workers[index]
            new = await self._start(index)
            if new is None:
                if not self._stopping.is_set():
                    log.error("restart stopped: the new worker %d did not become ready; "
                              "the running workers keep serving", index)
                return False
            self._install(new)  # first: the old one's watcher then knows it was replaced
        if old is not None:
            await self._stop_proc(old.proc)
            log.info("worker %d (pid %d) replaced by pid %d", index, old.proc.pid, new.proc.pid)
        return True


# -- the worker side ----------------------------------------------------------------------------


def _worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sse_server worker", description="One worker of --workers (started by it).")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--ready-fd", type=int, required=True)
    p.add_argument("--parent-fd", type=int, required=True)
    p.add_argument("--metrics-dir", required=True)
    p.add_argument("flags", nargs=argparse.REMAINDER, help="-- then the flags of python -m sse_server")
    return p


def worker_main(argv: list[str]) -> int:
    """A worker process: the flags after ``--`` as ``python -m sse_server`` takes them; its exit status."""
    from .cli import PREPARE_ERRORS, build_parser, configure_logging, prepare

    own = _worker_parser().parse_args(argv)
    flags = own.flags[1:] if own.flags[:1] == ["--"] else own.flags
    args = build_parser().parse_args(flags)
    configure_logging(args.log_level, f"[worker {own.index}]")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor's signal; a worker is told by SIGTERM
    try:
        config, app = prepare(args)
    except PREPARE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=own.listen_fd)
    try:
        asyncio.run(_serve(app, config, sock, own.index, own.ready_fd, own.parent_fd, Path(own.metrics_dir)))
    except OSError as e:
        print(f"error: worker {own.index}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(app: App, config: Config, sock: socket.socket, index: int, ready_fd: int, parent_fd: int,
                 metrics_dir: Path) -> None:
    from .cli import settle_collector
    from .server import Server

    server = Server(app, config)
    siblings = Siblings(metrics_dir, index, config.workers)
    if server.metrics is not None:
        server.metrics.gather = siblings.gather
    await server.start(sock=sock)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        asyncio.ensure_future(server.shutdown())

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    orphaned = False

    def parent_readable() -> None:
        # The supervisor never writes: this is end-of-file, it has gone.
        nonlocal orphaned
        orphaned = True
        loop.remove_reader(parent_fd)
        log.warning("the supervisor has gone; stopping")
        stop()

    loop.add_reader(parent_fd, parent_readable)
    answering = await siblings.answer(server.metrics) if server.metrics is not None else None
    settle_collector()  # as cli.serve
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    log.info("worker %d ready (pid %d) on %s", index, os.getpid(), server.url)
    try:
        await server.serve_forever()
    finally:
        loop.remove_reader(parent_fd)
        if answering is not None:
            answering.close()
        if orphaned:  # nobody else will remove the supervisor's directory; the last worker out does
            with contextlib.suppress(OSError):
                siblings.path(index).unlink()
            with contextlib.suppress(OSError):
                metrics_dir.rmdir()
        log.info("worker %d stopped", index)


# -- metrics across workers --------------------------------------------------------------------


def families_to_json(families: list[Family]) -> bytes:
    return json.dumps([
        [f.name, f.type, f.help, [[s.name, [list(kv) for kv in s.labels], s.value] for s in f.samples]]
        for f in families
    ]).encode()


def families_from_json(raw: bytes) -> list[Family]:
    """Raises ValueError (TypeError, KeyError) when ``raw`` is not what families_to_json wrote."""
    return [
        Family(str(name), str(kind), str(help_), tuple(
            Sample(str(sname), tuple((str(k), str(v)) for k, v in labels), float(value))
            for sname, labels, value in samples
        ))
        for name, kind, help_, samples in json.loads(raw)
    ]


class Siblings:
    """Worker ``index`` of ``count``: answers its figures on ``<dir>/<index>.sock``, gathers the others'."""

    def __init__(self, directory: Path, index: int, count: int) -> None:
        self.directory = directory
        self.index = index
        self.count = count

    def path(self, index: int) -> Path:
        return self.directory / f"{index}.sock"

    async def answer(self, metrics: Metrics) -> asyncio.base_events.Server:
        """Serve ``metrics.collect()`` to whoever connects (the directory is 0700: this user's workers)."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(families_to_json(metrics.collect()))
                await writer.drain()
            except ConnectionError:
                pass  # the scraping sibling gave up waiting
            finally:
                writer.close()

        # Bound under a private name, then renamed over the slot's: a restarted worker
        # takes the name from its predecessor atomically, and the predecessor never
        # unlinks what may already be its successor's.
        private = self.directory / f".{self.index}-{os.getpid()}.sock"
        server = await asyncio.start_unix_server(handle, path=str(private))
        os.replace(private, self.path(self.index))
        return server

    async def fetch(self, index: int) -> list[Family] | None:
        """Worker ``index``'s figures, or None if it did not answer within the timeout."""
        try:
            async with asyncio.timeout(_SIBLING_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(self.path(index)))
                try:
                    raw = await reader.read(_MAX_SIBLING_BYTES + 1)
                    chunks = [raw]
                    total = len(raw)
                    while raw and total <= _MAX_SIBLING_BYTES:
                        raw = await reader.read(_MAX_SIBLING_BYTES + 1 - total)
                        chunks.append(raw)
                        total += len(raw)
                finally:
                    writer.close()
            if total > _MAX_SIBLING_BYTES:
                log.warning("worker %d sent over %d bytes of metrics; left out", index, _MAX_SIBLING_BYTES)
                return None
            return families_from_json(b"".join(chunks))
        except (OSError, TimeoutError) as e:
            log.warning("worker %d did not answer for /metrics: %s", index, e or type(e).__name__)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("worker %d answered unreadable metrics: %s", index, e)
        return None

    async def gather(self, own: list[Family]) -> list[Family]:
        """Every worker's families labelled ``worker="<index>"``, and which of them answered."""
        others = [i for i in range(self.count) if i != self.index]
        fetched = await asyncio.gather(*(self.fetch(i) for i in others))
        per_worker: list[list[Family]] = [[] for _ in range(self.count)]
        per_worker[self.index] = own
        up = dict.fromkeys(range(self.count), 0)
        up[self.index] = 1
        for i, families in zip(others, fetched, strict=True):
            if families is not None:
                per_worker[i] = families
                up[i] = 1
        merged = merge(per_worker)  # position i is worker i: a missing one adds no samples
        merged.append(gauge("sse_workers", "Worker processes configured (--workers).", self.count))
        merged.append(gauge("sse_workers_scraped", "Workers whose figures this scrape holds.", sum(up.values())))
        merged.append(labelled("sse_worker_up", "gauge",
                               "1 if the worker's figures are in this scrape, 0 if it did not answer in time.",
                               (((("worker", str(i)),), v) for i, v in up.items())))
        return merged
