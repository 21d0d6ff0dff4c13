"""A short Locust load run in CI: loadtests/run_load.py, thresholds checked.

The run starts its own server on a free port, runs every kind of user (SSE
subscribers, publishers, chat and streamed pages) for about 20 s, and exits
non-zero when any threshold is missed; here it must also finish well inside a
minute. The 5-minute runs with thousands of users are in loadtests/README.md.
"""

from __future__ import annotations

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


def test_mixed_load_smoke(tmp_path: Path) -> None:
    """300 subscribers with publishers, chat and page users for ~15 s: no failure, all held."""
    subscribers = 300
    cmd = [
        sys.executable, "loadtests/run_load.py",
        "--scenario", "mixed", "--users", str(subscribers), "--spawn-rate", "150",
        "--duration", "15",
        "--chat-users", "10", "--page-users", "10",
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
    assert summary["tally"]["min_connected_in_hold"] == subscribers
    assert summary["tally"]["events"] > 0
    assert summary["resources"]["server_rss_mib_at_end"] > 0
    assert (tmp_path / "locust_stats.csv").exists() and (tmp_path / "report.html").exists()
