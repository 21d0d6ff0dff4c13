#!/usr/bin/env python3
"""Locust SSE users against two nodes behind nginx, publishers on both nodes, checked.

    python loadtests/scale_nginx.py --users 5000 --spawn-rate 250 --duration 300 --gzip-html
    python loadtests/scale_nginx.py --users 300 --spawn-rate 100 --duration 30     # a quick check

Strategy: this starts a redis-server (no persistence, a temp folder), two nodes
(``python -m sse_server --backplane redis://...``), and nginx on the shipped config
(loadtests/nginx/sse.conf.template, filled in by loadtests/nginx/render.py) with the
two nodes as its round-robin upstream. Redis, the nodes and nginx are pinned to
CPU 0, Locust to CPU 1. The subscribers connect through nginx's plain HTTP/1.1
listener; the publishers post straight to the nodes, taking them in turn, so every
event is published on one node and delivered through Redis to the subscribers of
both. The scenario, its users, thresholds and reports are run_load.py's ``sse``
scenario, reused as they are: it fails the run on any failure, any lost event (an
accepted event that did not reach a subscriber following its channel), any
dropped, reordered or reset stream, and a publish-to-receive p99 over its bound.

Flags other than the few below are run_load.py's (``--users``, ``--spawn-rate``,
``--duration``, ``--publishers``, ``--channels``, ``--publish-interval``, the
thresholds, ``--server-arg`` for both nodes); ``--scenario`` is always ``sse``.
Exit status: 0 passed, 1 a threshold missed, 2 the run could not be made.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_load  # noqa: E402
from benchlib import (  # noqa: E402
    HOST,
    OUR_SERVER,
    ServerFailed,
    ServerProcess,
    cpu_seconds,
    exit_on_sigterm,
    free_port,
    raise_nofile_limit,
    rss_kib,
)

NODES = 2
# nginx holds two descriptors per stream (the client's and the node's) and some spare
# for publishes and keep-alive; 20,000 is this machine's per-process hard limit.
NGINX_CONNECTIONS = 16384
NGINX_NOFILE = 20000
REDIS_START_TIMEOUT_S = 10.0


def _render_module() -> ModuleType:
    path = Path(__file__).resolve().parent / "nginx" / "render.py"
    spec = importlib.util.spec_from_file_location("sse_nginx_render", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Redis:
    """redis-server on a free port, no persistence, pinned to ``cpu``; stop() kills it."""

    def __init__(self, directory: Path, cpu: int) -> None:
        self.port = free_port()
        argv = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--dir", str(directory), "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(run_load._pinned(cpu, argv), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerFailed("redis-server did not answer PING")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _pong(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def self_signed(directory: Path) -> tuple[str, str]:
    """A throwaway certificate for nginx's TLS listener (the run itself uses plain HTTP)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


def split_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(this script's flags, run_load.py's flags for its sse scenario)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every other flag is run_load.py's (python loadtests/run_load.py --help).",
    )
    p.add_argument("--nginx", default=None, help="the nginx binary (default: nginx on PATH, else /usr/sbin/nginx)")
    own, rest = p.parse_known_args(argv)
    load = run_load.build_parser().parse_args(["--scenario", "sse", *rest])
    return own, load


def main(argv: list[str] | None = None) -> int:
    own, args = split_args(argv)
    render = _render_module()
    nginx_binary = own.nginx or render.find_nginx()
    missing = [name for name, ok in (
        ("nginx (apt-get install nginx)", nginx_binary),
        ("redis-server (apt-get install redis-server)", shutil.which("redis-server")),
        ("openssl", shutil.which("openssl")),
        ("locust (pip install -e '.[load]')", importlib.util.find_spec("locust")),
        ("redis-py (pip install -e '.[redis]')", importlib.util.find_spec("redis")),
    ) if not ok]  # fmt: skip
    if missing:
        print("error: missing " + ", ".join(missing), file=sys.stderr)
        return 2
    if args.users < 1 or args.spawn_rate <= 0 or args.duration <= 0:
        print("error: --users, --spawn-rate and --duration must be positive", file=sys.stderr)
        return 2
    if args.publishers < NODES:
        print(f"error: --publishers must be at least {NODES}, one per node", file=sys.stderr)
        return 2
    exit_on_sigterm()
    out = args.out or run_load.RESULTS_DIR / f"nginx-{NODES}nodes-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    args.ramp_timeout = 30 + 2 * (args.users + args.publishers) / args.spawn_rate
    raise_nofile_limit(run_load.resource_hard_limit())  # children inherit it (nginx runs as one process)
    print(f"{args.users} SSE users through nginx to {NODES} nodes, {args.publishers} publishers on the nodes, "
          f"spawn {args.spawn_rate:g}/s, hold {args.duration:g} s -> {out}", flush=True)

    started: list[ServerProcess] = []
    redis: Redis | None = None
    with tempfile.TemporaryDirectory(prefix="sse-scale-") as scratch:
        work = Path(scratch)
        try:
            redis = Redis(work, cpu=0)
            node_args = ["--backplane", redis.url, "--heartbeat", str(args.heartbeat), *args.server_arg]
            for i in range(NODES):
                started.append(ServerProcess(f"node-{i}", OUR_SERVER, cpu=0, extra_args=node_args).__enter__())
            nodes = started[:]
            certfile, keyfile = self_signed(work)
            conf = work / "nginx" / "nginx.conf"
            nginx = ServerProcess("nginx", render.command(conf, nginx_binary), cpu=0)
            if nginx.argv[0] == "taskset" and run_load._pinned(0, ["x"]) == ["x"]:
                nginx.argv = nginx.argv[3:]  # no taskset here, or one CPU: run unpinned
            render.prepare(
                conf.parent, [f"{HOST}:{n.port}" for n in nodes],
                plain_listen=f"{HOST}:{nginx.port}", tls_listen=f"{HOST}:{free_port()}",
                certfile=certfile, keyfile=keyfile,
                worker_connections=NGINX_CONNECTIONS, rlimit_nofile=NGINX_NOFILE,
            )  # fmt: skip
            started.append(nginx.__enter__())  # ready once /healthz answers 200 through it

            locust_cmd, _total = run_load.locust_argv(args, nginx.port, out)
            hosts = [arg for n in nodes for arg in ("--publish-host", f"http://{HOST}:{n.port}")]
            at = len(locust_cmd) - len(run_load.SCENARIOS["sse"])  # options go before the user classes
            locust_cmd[at:at] = hosts
            timeout_s = args.ramp_timeout + args.duration + 30 + run_load.STOP_GRACE_S + 30
            locust_rc, _samples = run_load.run_locust(locust_cmd, nodes[0], out, timeout_s)
            alive = all(s.alive() for s in started) and redis.proc.poll() is None
            usage = {s.name: {"cpu_s": round(cpu_seconds(s.pid), 1), "rss_mib": round(rss_kib(s.pid) / 1024, 1)}
                     for s in started if s.alive()}
        except ServerFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        finally:
            for s in reversed(started):
                s.stop()
            if redis is not None:
                redis.stop()
            error_log = work / "nginx" / "error.log"
            if error_log.exists():
                shutil.copyfile(error_log, out / "nginx_error.log")

    stats = run_load.read_stats(out / "locust_stats.csv")
    tally_path = out / "tally.json"
    tally = json.loads(tally_path.read_text()) if tally_path.exists() else {}
    problems = run_load.check(args, stats, tally, locust_rc, alive)
    if args.gzip_html:
        run_load.gzip_report(out)
    latency = stats.get(("SSE", "publish-to-receive"), {})
    total = stats.get(("", "Aggregated"), {})
    print(run_load.summary_table(stats))
    print(f"failures {total.get('Failure Count')}, lost {tally.get('lost')}, "
          f"publish-to-receive p50 {latency.get('50%')} ms p99 {latency.get('99%')} ms "
          f"over {latency.get('Request Count')} deliveries; "
          f"{tally.get('min_connected_in_hold')} of {args.users} subscribers held for {tally.get('hold_s')} s")
    print("cpu s / rss MiB at the end: " + ", ".join(f"{k} {v['cpu_s']} / {v['rss_mib']}" for k, v in usage.items()))
    record = {
        "scenario": f"sse through nginx, {NODES} nodes on Redis",
        "command": ["python", "loadtests/scale_nginx.py", *(sys.argv[1:] if argv is None else argv)],
        "locust": [run_load._portable(arg) for arg in locust_cmd],
        "users": args.users,
        "publishers": args.publishers,
        "hold_s": tally.get("hold_s"),
        "tally": tally,
        "processes": usage,
    }
    return run_load.conclude(out, record, problems)


if __name__ == "__main__":
    sys.exit(main())
