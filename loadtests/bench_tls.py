"""HTTPS cost: new TLS connections per second, and server CPU per request with TLS on and off.

Strategy: a certificate is made for this run (trustme, ECDSA P-256) and both servers
serve it: sse_server (``--certfile/--keyfile``) and uvicorn on the asyncio loop with
h11 (``ssl_certfile``/``ssl_keyfile``), a minimal ASGI app answering /healthz. Each
server runs alone, pinned to CPU 0; wrk runs pinned to CPU 1. Three loads, each
against a fresh server after a 1 s warm-up, interleaved across servers, median of
``--repeats``:

- ``tls-connect``: ``wrk -H 'Connection: close'`` over https, so every request is a
  new TCP connection and a full handshake (wrk keeps no session): requests/s is
  connections/s.
- ``tls-keepalive``: keep-alive GETs over https.
- ``plain-keepalive``: the same over http (the server started without a certificate).

Server CPU per request is /proc utime+stime during the measured run divided by the
requests wrk counted.

Usage:
    python loadtests/bench_tls.py                        # 3 x 5 s per server and load
    python loadtests/bench_tls.py --duration 10 --repeats 5
    python loadtests/bench_tls.py --only sse_server
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchlib import REPO_ROOT, cpu_seconds, exit_on_sigterm, free_port, median, require_modules

UVICORN_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tls = {"ssl_certfile": cert, "ssl_keyfile": key} if cert else {}
uvicorn.run(app, host="127.0.0.1", port=port, loop="asyncio", http="h11", log_level="warning",
            access_log=False, lifespan="off", **tls)
"""

LOADS = ("tls-connect", "tls-keepalive", "plain-keepalive")
WRK_RPS = re.compile(rb"Requests/sec:\s+([\d.]+)")
WRK_REQUESTS = re.compile(rb"(\d+) requests in")
WRK_ERRORS = re.compile(rb"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def server_argv(name: str, port: int, cert: str | None, key: str | None) -> list[str]:
    if name == "sse_server":
        argv = [sys.executable, "-m", "sse_server", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning"]
        return argv + (["--certfile", cert, "--keyfile", key] if cert and key else [])
    return [sys.executable, "-c", UVICORN_APP, str(port), cert or "", key or ""]


def wait_ready(port: int, tls: bool, proc: subprocess.Popen[bytes]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                sock = context.wrap_socket(raw) if tls else raw
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not answer /healthz")


def wrk(url: str, duration_s: int, connections: int, close: bool) -> tuple[float, int, int]:
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + [url], capture_output=True, timeout=duration_s + 30).stdout
    rps = WRK_RPS.search(out)
    total = WRK_REQUESTS.search(out)
    errors = WRK_ERRORS.search(out)
    if rps is None or total is None:
        raise RuntimeError(f"wrk printed no figures: {out.decode(errors='replace')[-300:]}")
    return float(rps.group(1)), int(total.group(1)), sum(int(g) for g in errors.groups()) if errors else 0


def run_once(name: str, load: str, cert: str, key: str, args: argparse.Namespace) -> tuple[float, float, int]:
    """(requests/s, server CPU µs per request, socket errors) for one fresh server."""
    tls = load.startswith("tls")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(["taskset", "-c", "0", *server_argv(name, port, cert if tls else None,
                                                                  key if tls else None)],
                            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, tls, proc)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
        close = load == "tls-connect"
        connections = args.connect_connections if close else args.connections
        wrk(url, 1, connections, close)  # warm-up
        before = cpu_seconds(proc.pid)
        rps, total, errors = wrk(url, args.duration, connections, close)
        used = cpu_seconds(proc.pid) - before
        return rps, used / max(total, 1) * 1e6, errors
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per measured wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50, help="wrk connections for keep-alive loads")
    parser.add_argument("--connect-connections", type=int, default=16,
                        help="wrk connections for tls-connect (each request a new connection)")
    parser.add_argument("--only", action="append", choices=["sse_server", "uvicorn-h11"])
    parser.add_argument("--loads", default=",".join(LOADS), help=f"comma list of {', '.join(LOADS)}")
    args = parser.parse_args()
    exit_on_sigterm()
    require_modules(["uvicorn", "trustme"])
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    import trustme

    names = args.only or ["sse_server", "uvicorn-h11"]
    loads = [load for load in args.loads.split(",") if load]
    with tempfile.TemporaryDirectory() as folder:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        cert, key = str(Path(folder) / "cert.pem"), str(Path(folder) / "key.pem")
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        results: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
        for _ in range(args.repeats):
            for load in loads:
                for name in names:
                    results[name, load].append(run_once(name, load, cert, key, args))
    rows = []
    for load in loads:
        for name in names:
            runs = results[name, load]
            rows.append({"load": load, "server": name, "req/s": median(r[0] for r in runs),
                         "cpu µs/req": median(r[1] for r in runs), "errors": sum(r[2] for r in runs)})
    headers = ["load", "server", "req/s", "cpu µs/req", "errors"]
    print(_table(headers, rows))
    print(f"\nmedian of {args.repeats} x {args.duration:g} s; server on CPU 0, wrk on CPU 1; "
          f"tls-connect: {args.connect_connections} connections, each request a new TLS connection")


def _table(headers: list[str], rows: list[dict[str, object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
