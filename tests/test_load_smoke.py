"""A short Locust load run in CI: loadtests/run_load.py, thresholds checked.

The run starts its own server on a free port, runs every kind of user (SSE
subscribers, publishers, chat and streamed pages) for about 20 s, and exits
non-zero when any threshold is missed; here it must also finish well inside a
minute. The 5-minute runs with thousands of users are in loadtests/README.md.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 55  # the run itself takes about 20 s

pytestmark = [
    pytest.mark.load,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None,
        reason="locust is not installed (it is in the test extra: pip install -e '.[test]')",
    ),
]


def read_stats(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust's stats CSV as rows keyed by (Type, Name)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


def test_mixed_load_smoke(tmp_path: Path) -> None:
    """300 subscribers with publishers, chat and page users for ~15 s: no failure, every event delivered."""
    subscribers, channels, publishers, publish_interval_s = 300, 10, 2, 0.2
    chat_users = page_users = 10
    cmd = [
        sys.executable, "loadtests/run_load.py",
        "--scenario", "mixed", "--users", str(subscribers), "--spawn-rate", "150",
        "--duration", "15",
        "--channels", str(channels), "--publishers", str(publishers),
        "--publish-interval", str(publish_interval_s),
        "--chat-users", str(chat_users), "--page-users", str(page_users),
        # A quick mock model, so each chat user finishes several completions.
        "--model-first-token-ms", "50", "--model-tokens-per-s", "200",
        "--out", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # run_load.py stops Locust and the server on SIGTERM
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"run_load.py took over {TIMEOUT_S} s:\n{output}")
    assert proc.returncode == 0, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"], summary["problems"]
    tally, stats = summary["tally"], read_stats(tmp_path / "locust_stats.csv")
    assert (tmp_path / "report.html").exists()

    assert stats[("", "Aggregated")]["Failure Count"] == "0", "some Locust request failed"
    # Every subscriber stayed connected through the hold, and no stream dropped, saw an id
    # repeat or go back, or had to reset; the totals below show that none lost an event.
    assert tally["min_connected_in_hold"] == subscribers
    assert (tally["drops"], tally["reordered"], tally["resets"]) == (0, 0, 0)
    # Subscribers are spread evenly, so each published event reaches exactly this many
    # streams once they are connected: received can be neither more (a duplicate) nor
    # fewer than every event published during the hold (pacing allows one late tick each).
    per_channel = subscribers // channels
    published = int(stats[("POST", "/channels/[name]/events")]["Request Count"])
    published_in_hold = publishers * (int(tally["hold_s"] / publish_interval_s) - 1)
    assert per_channel * published_in_hold <= tally["events"] <= per_channel * published, (
        tally["events"], published, tally["hold_s"])
    # A chat completion (50 ms + 64 tokens at 200/s) or a page (~0.3 s) plus 1 s of think
    # time allows ~10 per user in 15 s; 3 leaves room for a slow machine.
    assert int(stats[("CHAT", "total")]["Request Count"]) >= 3 * chat_users
    assert int(stats[("PAGE", "whole page")]["Request Count"]) >= 3 * page_users
    # 300 streams, chat and pages measured ~28 MiB (3000 streams: 43 MiB); 128 KiB more
    # per stream would cross 64.
    assert summary["resources"]["server_peak_rss_mib"] < 64, summary["resources"]
