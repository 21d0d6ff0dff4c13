#!/usr/bin/env python3
"""Run one Locust scenario against a server started here, check it, report it.

    python loadtests/run_load.py --scenario sse --users 5000 --spawn-rate 250 --duration 300
    python loadtests/run_load.py --scenario mixed --users 2000 --spawn-rate 200 --duration 300

Strategy: the server (``python -m sse_server``) is pinned to CPU 0 and Locust,
headless, to CPU 1, so neither steals the other's core. Locust spawns the
users at --spawn-rate and its RampHold shape (locustfile.py) holds them for
--duration seconds once every user is spawned and every subscriber connected,
then stops. Locust writes its CSV and HTML reports into the output directory;
this script samples both processes' RSS and CPU time from /proc every second
while the test runs, then checks the thresholds below and exits 1 when any is
missed (2 when the run could not be made at all).

--users counts the scenario's main users: subscribers for sse and mixed (the
publishers, chat and page users come on top), chat users for chat, page users
for pages.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    HOST,
    OUR_SERVER,
    REPO_ROOT,
    ServerFailed,
    ServerProcess,
    cpu_seconds,
    exit_on_sigterm,
    raise_nofile_limit,
    rss_kib,
)

LOADTESTS_DIR = Path(__file__).resolve().parent
LOCUSTFILE = LOADTESTS_DIR / "locustfile.py"
RESULTS_DIR = LOADTESTS_DIR / "results"

# The user classes of each scenario (locustfile.py), in Locust's order.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "sse": ("SSESubscriber", "Publisher"),
    "mixed": ("SSESubscriber", "Publisher", "ChatUser", "PageUser"),
    "chat": ("ChatUser",),
    "pages": ("PageUser",),
}
# The measurements each user class must produce at least once (type, name):
# a run in which they never happened proves nothing, so it fails.
EXPECTED: dict[str, tuple[tuple[str, str], ...]] = {
    "SSESubscriber": (("SSE", "connect"), ("SSE", "first event"), ("SSE", "publish-to-receive")),
    "Publisher": (("POST", "/channels/[name]/events"),),
    "ChatUser": (("CHAT", "time to first token"), ("CHAT", "total")),
    "PageUser": (("PAGE", "first byte"), ("PAGE", "shell"), ("PAGE", "whole page")),
}
SAMPLE_EVERY_S = 1.0
STOP_GRACE_S = 20.0  # Locust writes its reports after the stop; give it this long


@dataclass(frozen=True, slots=True)
class Threshold:
    """p-th percentile of one Locust measurement compared with a bound from the flags."""

    request_type: str
    name: str
    column: str  # a percentile column of Locust's stats CSV, e.g. "99%"
    flag: str  # the argparse dest holding the bound
    at_most: bool = True  # False: the value must be at least the bound


THRESHOLDS = (
    Threshold("SSE", "publish-to-receive", "99%", "max_p99_latency_ms"),
    Threshold("SSE", "connect", "99%", "max_p99_connect_ms"),
    Threshold("POST", "/channels/[name]/events", "99%", "max_p99_publish_ms"),
    Threshold("CHAT", "time to first token", "99%", "max_p99_first_token_ms"),
    Threshold("CHAT", "tokens/s (a rate, not ms)", "50%", "min_p50_tokens_per_s", at_most=False),
    Threshold("PAGE", "shell", "99%", "max_p99_shell_ms"),
    Threshold("PAGE", "whole page", "99%", "max_p99_page_ms"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument(
        "--users",
        type=int,
        required=True,
        help="main users: subscribers (sse, mixed), chat users (chat), page users (pages)",
    )
    p.add_argument("--spawn-rate", type=float, default=100.0, help="users started per second")
    p.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds to hold the load once every user is up (the ramp comes before)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report directory (default: loadtests/results/<scenario>-<timestamp>)",
    )
    p.add_argument(
        "--gzip-html",
        action="store_true",
        help="keep Locust's HTML report as report.html.gz (a third of its ~1 MB)",
    )
    w = p.add_argument_group("workload")
    w.add_argument("--publishers", type=int, default=2, help="publishers (sse, mixed)")
    w.add_argument("--channels", type=int, default=10, help="channels the subscribers spread over")
    w.add_argument(
        "--publish-interval", type=float, default=0.2, help="seconds between one publisher's events"
    )
    w.add_argument("--event-bytes", type=int, default=0, help="padding per published event")
    w.add_argument("--chat-users", type=int, default=20, help="chat users in the mixed scenario")
    w.add_argument("--page-users", type=int, default=20, help="page users in the mixed scenario")
    w.add_argument("--chat-max-tokens", type=int, default=64, help="max_tokens per completion")
    w.add_argument("--page-delays", default="300,100,200", help="delays= of GET /suspense (ms)")
    w.add_argument(
        "--think-s",
        type=float,
        default=1.0,
        help="mean pause between a chat or page user's requests",
    )
    s = p.add_argument_group("server")
    s.add_argument("--model-tokens-per-s", type=float, default=40.0, help="the mock model's pace")
    s.add_argument(
        "--model-first-token-ms",
        type=float,
        default=300.0,
        help="the mock model's first-token delay",
    )
    s.add_argument("--heartbeat", type=float, default=15.0, help="the server's SSE heartbeat (s)")
    s.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for python -m sse_server (repeatable)",
    )
    t = p.add_argument_group("thresholds (the run fails when one is missed)")
    t.add_argument(
        "--max-failures", type=int, default=0, help="failed requests and broken streams allowed"
    )
    t.add_argument(
        "--max-p99-latency-ms", type=float, default=1000.0, help="SSE publish-to-receive p99"
    )
    t.add_argument("--max-p99-connect-ms", type=float, default=3000.0, help="SSE connect p99")
    t.add_argument("--max-p99-publish-ms", type=float, default=1000.0, help="publish request p99")
    t.add_argument(
        "--max-p99-first-token-ms",
        type=float,
        default=None,
        help="chat time to first token p99 (default: --model-first-token-ms + 1000)",
    )
    t.add_argument(
        "--min-p50-tokens-per-s",
        type=float,
        default=None,
        help="chat tokens/s median (default: half of --model-tokens-per-s)",
    )
    t.add_argument("--max-p99-shell-ms", type=float, default=1000.0, help="page shell p99")
    t.add_argument(
        "--max-p99-page-ms",
        type=float,
        default=None,
        help="whole page p99 (default: the largest page delay + 1000)",
    )
    return p


# ------------------------------------------------------------------- processes


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    """argv pinned to one CPU with taskset, when there is one and more than one CPU."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def start_server(args: argparse.Namespace) -> ServerProcess:
    extra = [
        "--model-tokens-per-s", str(args.model_tokens_per_s),
        "--model-first-token-ms", str(args.model_first_token_ms),
        "--heartbeat", str(args.heartbeat),
        *args.server_arg,
    ]  # fmt: skip
    server = ServerProcess("sse_server", OUR_SERVER, cpu=0, extra_args=extra)
    if server.argv[0] == "taskset" and _pinned(0, ["x"]) == ["x"]:
        server.argv = server.argv[3:]  # no taskset here, or one CPU: run unpinned
    return server.__enter__()


def locust_argv(args: argparse.Namespace, port: int, out: Path) -> tuple[list[str], int]:
    """The Locust command line, and the total user count it spawns."""
    classes = SCENARIOS[args.scenario]
    extras = 0
    if "Publisher" in classes:
        extras += args.publishers
    if args.scenario == "mixed":
        extras += args.chat_users + args.page_users
    total = args.users + extras
    run_time = math.ceil(args.ramp_timeout + args.duration + 30)  # a backstop; RampHold stops first
    argv = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary",
        "--host", f"http://{HOST}:{port}",
        "--users", str(total), "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{run_time}s", "--stop-timeout", "0",
        "--hold", str(args.duration), "--ramp-timeout", str(args.ramp_timeout),
        "--csv", str(out / "locust"), "--html", str(out / "report.html"),
        "--exit-code-on-error", "1", "--loglevel", "WARNING",
        "--summary-json", str(out / "tally.json"),
        "--channels", str(args.channels),
        "--publishers", str(args.publishers if "Publisher" in classes else 0),
        "--publish-interval", str(args.publish_interval),
        "--event-bytes", str(args.event_bytes),
        "--sse-read-timeout", str(max(60.0, 3 * args.heartbeat)),
        "--chat-users", str(args.chat_users if args.scenario == "mixed" else 0),
        "--page-users", str(args.page_users if args.scenario == "mixed" else 0),
        "--chat-max-tokens", str(args.chat_max_tokens),
        "--chat-think-s", str(args.think_s), "--page-think-s", str(args.think_s),
        "--page-delays", args.page_delays,
        *classes,
    ]  # fmt: skip
    return _pinned(1, argv), total


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group (Locust then writes its reports), SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)


@dataclass(slots=True)
class Sample:
    t: float  # time.time()
    server_rss_kib: int
    server_cpu_s: float
    locust_rss_kib: int
    locust_cpu_s: float


def _read(pid: int) -> tuple[int, float]:
    try:
        return rss_kib(pid), cpu_seconds(pid)
    except (OSError, ServerFailed, ValueError):
        return 0, 0.0


def run_locust(
    argv: list[str], server: ServerProcess, out: Path, timeout_s: float
) -> tuple[int, list[Sample]]:
    """Run Locust to its end (bounded by timeout_s), sampling both processes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    samples: list[Sample] = []
    with open(out / "locust.log", "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout_s
            for _ in range(int(timeout_s / SAMPLE_EVERY_S) + 1):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                srss, scpu = _read(server.pid)
                lrss, lcpu = _read(proc.pid)
                if lrss:
                    samples.append(Sample(time.time(), srss, scpu, lrss, lcpu))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=SAMPLE_EVERY_S)
            if proc.poll() is None:
                print(f"locust still running after {timeout_s:.0f} s: stopping it", file=sys.stderr)
        finally:
            _stop_group(proc, STOP_GRACE_S)
    return proc.returncode, samples


# --------------------------------------------------------------------- results


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return None if math.isnan(value) else value


def read_stats(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust's <prefix>_stats.csv as {(type, name): row}; the total is ("", "Aggregated")."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


def _window(
    samples: list[Sample], start: float | None, end: float | None
) -> tuple[Sample, Sample] | None:
    """The first and last samples inside the hold, or None without two of them."""
    if not samples or start is None or end is None:
        return None
    inside = [s for s in samples if start <= s.t <= end]
    return (inside[0], inside[-1]) if len(inside) >= 2 else None


def resources(samples: list[Sample], tally: dict[str, Any]) -> dict[str, Any]:
    """Server and Locust RSS at the end of the hold, peaks, and CPU use over the hold."""
    out: dict[str, Any] = {}
    if not samples:
        return out
    out["server_peak_rss_mib"] = round(max(s.server_rss_kib for s in samples) / 1024, 1)
    out["locust_peak_rss_mib"] = round(max(s.locust_rss_kib for s in samples) / 1024, 1)
    window = _window(samples, tally.get("hold_started_at"), tally.get("hold_ended_at"))
    last = window[1] if window else samples[-1]
    out["server_rss_mib_at_end"] = round(last.server_rss_kib / 1024, 1)
    out["locust_rss_mib_at_end"] = round(last.locust_rss_kib / 1024, 1)
    out["server_cpu_s_total"] = round(last.server_cpu_s, 1)
    out["locust_cpu_s_total"] = round(last.locust_cpu_s, 1)
    if window:
        a, b = window
        span = b.t - a.t
        out["server_cpu_pct_in_hold"] = round(100 * (b.server_cpu_s - a.server_cpu_s) / span, 1)
        out["locust_cpu_pct_in_hold"] = round(100 * (b.locust_cpu_s - a.locust_cpu_s) / span, 1)
    return out


def check(
    args: argparse.Namespace,
    stats: dict[tuple[str, str], dict[str, str]],
    tally: dict[str, Any],
    locust_rc: int,
    server_alive: bool,
) -> list[str]:
    """Every missed threshold, as a line a person can act on; empty when all are met."""
    problems: list[str] = []
    total = stats.get(("", "Aggregated"))
    if total is None:
        return [f"Locust wrote no statistics (exit code {locust_rc}); see locust.log"]
    failures = int(total["Failure Count"])
    if failures > args.max_failures:
        problems.append(
            f"{failures} failures (allowed {args.max_failures}); see locust_failures.csv"
        )
    if locust_rc not in (0, 1):  # 1 is --exit-code-on-error, already counted above
        problems.append(f"Locust exited with {locust_rc}; see locust.log")
    if not server_alive:
        problems.append("the server died during the run")
    classes = SCENARIOS[args.scenario]
    for user_class in classes:
        for key in EXPECTED[user_class]:
            if key not in stats or not int(stats[key]["Request Count"]):
                problems.append(f"no {key[0]} {key[1]!r} measured at all")
    if "SSESubscriber" in classes:
        wanted = args.users
        held = tally.get("min_connected_in_hold")
        at_stop = tally.get("at_stop", {}).get("connected")
        if tally.get("hold_started_at") is None:
            problems.append("the hold never started")
        elif held != wanted:
            problems.append(
                f"{held} of {wanted} subscribers connected at the worst moment of the hold"
            )
        if at_stop != wanted:
            problems.append(f"{at_stop} of {wanted} subscribers connected at the end")
        if tally.get("lost") is None:
            problems.append("Locust did not count lost events (no tally at quit)")
        elif tally["lost"]:
            problems.append(f"{tally['lost']} accepted events did not reach a subscriber that was following")
        if tally.get("drops") or tally.get("reordered") or tally.get("resets"):
            problems.append(
                f"streams: {tally['drops']} dropped, {tally['reordered']} repeated or older ids, "
                f"{tally['resets']} resets"
            )
    for th in THRESHOLDS:
        row = stats.get((th.request_type, th.name))
        bound = getattr(args, th.flag)
        if row is None or bound is None or not int(row["Request Count"]):
            continue
        value = _number(row.get(th.column))
        if value is None:
            continue
        if (value > bound) if th.at_most else (value < bound):
            relation = "over" if th.at_most else "under"
            problems.append(
                f"{th.request_type} {th.name} {th.column} = {value:g}, {relation} {bound:g} "
                f"(--{th.flag.replace('_', '-')})"
            )
    return problems


def gzip_report(out: Path) -> None:
    """Replace Locust's report.html in ``out`` by report.html.gz (a third of its ~1 MB)."""
    html = out / "report.html"
    if html.exists():
        with (
            open(html, "rb") as src,
            gzip.open(out / "report.html.gz", "wb", compresslevel=9) as dst,
        ):
            shutil.copyfileobj(src, dst)
        html.unlink()


def summary_table(stats: dict[tuple[str, str], dict[str, str]]) -> str:
    rows = [("measurement", "count", "fails", "p50", "p99", "max")]
    for (rtype, name), row in stats.items():
        if rtype == "":
            continue
        maximum = _number(row["Max Response Time"])
        rows.append(
            (
                f"{rtype} {name}",
                row["Request Count"],
                row["Failure Count"],
                row["50%"],
                row["99%"],
                f"{maximum:.0f}" if maximum is not None else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        lines.append(
            "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.users < 1 or args.spawn_rate <= 0 or args.duration <= 0:
        print("error: --users, --spawn-rate and --duration must be positive", file=sys.stderr)
        return 2
    if importlib.util.find_spec("locust") is None:
        print("error: locust is not installed: pip install -e '.[load]'", file=sys.stderr)
        return 2
    try:
        delays = [int(d) for d in args.page_delays.split(",") if d.strip()]
    except ValueError:
        print("error: --page-delays wants comma-separated integers (ms)", file=sys.stderr)
        return 2
    if args.max_p99_first_token_ms is None:
        args.max_p99_first_token_ms = args.model_first_token_ms + 1000
    if args.min_p50_tokens_per_s is None:
        args.min_p50_tokens_per_s = (
            args.model_tokens_per_s / 2 if args.model_tokens_per_s > 0 else None
        )
    if args.max_p99_page_ms is None:
        args.max_p99_page_ms = max(delays, default=0) + 1000
    exit_on_sigterm()
    out = args.out or RESULTS_DIR / f"{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)

    classes = SCENARIOS[args.scenario]
    extras = args.publishers if "Publisher" in classes else 0
    extras += args.chat_users + args.page_users if args.scenario == "mixed" else 0
    args.ramp_timeout = 30 + 2 * (args.users + extras) / args.spawn_rate
    raise_nofile_limit(resource_hard_limit())

    print(
        f"{args.scenario}: {args.users} main users + {extras} others, spawn {args.spawn_rate:g}/s, "
        f"hold {args.duration:g} s -> {out}",
        flush=True,
    )
    try:
        server = start_server(args)
    except ServerFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        locust_cmd, _total = locust_argv(args, server.port, out)
        timeout_s = args.ramp_timeout + args.duration + 30 + STOP_GRACE_S + 30
        locust_rc, samples = run_locust(locust_cmd, server, out, timeout_s)
        server_alive = server.alive()
    finally:
        server.stop()

    stats = read_stats(out / "locust_stats.csv")
    tally_path = out / "tally.json"
    tally = json.loads(tally_path.read_text()) if tally_path.exists() else {}
    res = resources(samples, tally)
    with open(out / "resources.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "server_rss_kib", "server_cpu_s", "locust_rss_kib", "locust_cpu_s"])
        t0 = samples[0].t if samples else 0.0
        for s in samples:
            writer.writerow(
                [
                    f"{s.t - t0:.1f}",
                    s.server_rss_kib,
                    f"{s.server_cpu_s:.2f}",
                    s.locust_rss_kib,
                    f"{s.locust_cpu_s:.2f}",
                ]
            )
    problems = check(args, stats, tally, locust_rc, server_alive)
    if args.gzip_html:
        gzip_report(out)

    print(summary_table(stats))
    if "SSESubscriber" in classes:
        print(
            f"subscribers: {tally.get('min_connected_in_hold')} of {args.users} held for "
            f"{tally.get('hold_s')} s (peak {tally.get('peak_connected')}, at end "
            f"{tally.get('at_stop', {}).get('connected')}), {tally.get('events')} events received, "
            f"{tally.get('lost')} lost"
        )
    print("resources: " + ", ".join(f"{k} {v}" for k, v in res.items()))
    record = {
        "scenario": args.scenario,
        "command": ["python", "loadtests/run_load.py", *(sys.argv[1:] if argv is None else argv)],
        "locust": [_portable(arg) for arg in locust_cmd],
        "users": args.users,
        "others": extras,
        "hold_s": tally.get("hold_s"),
        "tally": tally,
        "resources": res,
    }
    return conclude(out, record, problems)


def conclude(out: Path, record: dict[str, Any], problems: list[str]) -> int:
    """Write summary.json (the record, the problems, the verdict), print the verdict,
    and return the exit status: 0 passed, 1 a threshold missed."""
    record = {**record, "problems": problems, "passed": not problems}
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"PASSED (reports in {out})")
    return 0


def _portable(arg: str) -> str:
    """An argument as it reads on any checkout (no interpreter or checkout path)."""
    return "python" if arg == sys.executable else arg.replace(str(REPO_ROOT) + os.sep, "")


def resource_hard_limit() -> int:
    """The open-file hard limit, to lift the soft one to (children inherit it)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else hard


if __name__ == "__main__":
    sys.exit(main())
