#!/usr/bin/env python3
"""Fill in the shipped nginx config (sse.conf.template) and say how to run nginx on it.

    python loadtests/nginx/render.py --node 127.0.0.1:8001 --node 127.0.0.1:8002 \
        --plain 8080 --tls 8443 --certfile cert.pem --keyfile key.pem --prefix /tmp/sse-nginx

writes /tmp/sse-nginx/nginx.conf (and the temp folders nginx writes to) and prints
the command that runs it in the foreground. The tests (tests/nginx_server.py) and
loadtests/scale_nginx.py use ``prepare`` and ``command`` from here, so what they run
is the shipped file with only its ``${NAME}`` placeholders replaced.

Strategy: ``${NAME}`` (capitals only, as envsubst would fill it) never clashes with
nginx's own ``$variables``, which are lower case. Every placeholder must get a value
and every value must have a placeholder, so a renamed one fails loudly instead of
shipping a config that nginx rejects at 3 a.m.

nginx is run with ``-p PREFIX -g 'daemon off; master_process off;'``: in the
foreground, one process, as the user who starts it. With a master process started
as root the workers would switch to ``nobody``, who cannot enter a private temp
folder; one process is also what a single-worker benchmark wants.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["TEMPLATE", "TEMP_DIRS", "command", "find_nginx", "prepare", "render"]

TEMPLATE = Path(__file__).resolve().with_name("sse.conf.template")
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")  # the *_temp_path of the template
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
DEBIAN_NGINX = "/usr/sbin/nginx"  # not on a non-root PATH


def render(values: Mapping[str, str], template: str | None = None) -> str:
    """The template with every ``${NAME}`` replaced by ``values[NAME]``.

    >>> render({"PORT": "8080"}, "listen ${PORT}; # $host stays")
    'listen 8080; # $host stays'
    """
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    wanted = set(_PLACEHOLDER.findall(text))
    missing, unused = wanted - values.keys(), values.keys() - wanted
    if missing or unused:
        raise ValueError(f"nginx template: no value for {sorted(missing)}; no placeholder for {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def prepare(
    prefix: Path,
    nodes: Sequence[str],
    *,
    plain_listen: str,
    tls_listen: str,
    certfile: str,
    keyfile: str,
    worker_processes: str = "1",
    worker_connections: int = 1024,
    rlimit_nofile: int = 4096,
    access_log: bool = False,
) -> Path:
    """Write ``prefix/nginx.conf`` for ``nodes`` (``host:port`` each), make its temp
    folders, and return the config's path."""
    if not nodes:
        raise ValueError("at least one node (host:port) is needed")
    prefix = prefix.resolve()
    for name in TEMP_DIRS:
        (prefix / name).mkdir(parents=True, exist_ok=True)
    servers = "\n        ".join(f"server {node} max_fails=3 fail_timeout=5s;" for node in nodes)
    conf = prefix / "nginx.conf"
    conf.write_text(render({
        "WORKER_PROCESSES": worker_processes,
        "WORKER_RLIMIT_NOFILE": str(rlimit_nofile),
        "WORKER_CONNECTIONS": str(worker_connections),
        "PREFIX": str(prefix),
        "ACCESS_LOG": f"{prefix}/access.log" if access_log else "off",
        "UPSTREAM_SERVERS": servers,
        "TLS_LISTEN": tls_listen,
        "PLAIN_LISTEN": plain_listen,
        "CERTFILE": certfile,
        "KEYFILE": keyfile,
    }), encoding="utf-8")
    return conf


def find_nginx() -> str | None:
    """nginx on PATH, else Debian's /usr/sbin/nginx, else None."""
    found = shutil.which("nginx")
    if found is None and Path(DEBIAN_NGINX).exists():
        found = DEBIAN_NGINX
    return found


def command(conf: Path, nginx: str = DEBIAN_NGINX) -> list[str]:
    """The argv that runs nginx on ``conf`` in the foreground, one process; startup
    errors go to stderr (``-e``), later ones to the config's error.log."""
    return [nginx, "-p", str(conf.parent), "-c", str(conf), "-e", "stderr",
            "-g", "daemon off; master_process off;"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--node", action="append", required=True, metavar="HOST:PORT", help="a node (repeat)")
    p.add_argument("--plain", default="8080", help="plain HTTP/1.1 listener: port or address:port")
    p.add_argument("--tls", default="8443", help="HTTP/2 + TLS listener: port or address:port")
    p.add_argument("--certfile", required=True)
    p.add_argument("--keyfile", required=True)
    p.add_argument("--prefix", type=Path, required=True, help="folder for nginx.conf, pid, logs, temp files")
    p.add_argument("--worker-processes", default="auto", help="a number, or auto: one per core")
    p.add_argument("--worker-connections", type=int, default=16384)
    p.add_argument("--rlimit-nofile", type=int, default=20000)
    args = p.parse_args(argv)
    conf = prepare(args.prefix, args.node, plain_listen=args.plain, tls_listen=args.tls,
                   certfile=str(Path(args.certfile).resolve()), keyfile=str(Path(args.keyfile).resolve()),
                   worker_processes=args.worker_processes, worker_connections=args.worker_connections,
                   rlimit_nofile=args.rlimit_nofile)
    print(" ".join(f"'{a}'" if " " in a else a for a in command(conf, find_nginx() or DEBIAN_NGINX)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
