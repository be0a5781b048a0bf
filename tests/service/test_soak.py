"""The soak script's quick mode against a real uvicorn: no 5xx, right answers, flat memory and fds, graceful stop."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_quick_soak_holds(tmp_path):
    out = tmp_path / "soak.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--quick", "--out", str(out)],
        cwd=ROOT, check=True, timeout=240, capture_output=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    soak = result["soak"]
    assert soak["requests"] > 50
    assert soak["unexpected"] == {}, soak["unexpected"]  # every status, and every face count, as it should be
    assert set(soak["by_status"]) <= {"2xx", "4xx"}, soak["by_status"]  # no 5xx, no transport errors
    assert result["rss_growth_percent"] <= 10, result["rss_kib"]
    assert result["fds"]["after"] <= result["fds"]["baseline"], result["fds"]
    shutdown = result["shutdown"]
    assert shutdown["in_flight_at_sigterm"] >= 1
    assert shutdown["completed_200"] == shutdown["requests"], shutdown
    assert shutdown["exit_code"] in (0, -15)  # uvicorn re-raises SIGTERM after its graceful shutdown
    assert result["restart_ready_seconds"] < 60
