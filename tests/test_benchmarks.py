"""The benchmark scripts stay runnable, concurrent requests to a live server get correct answers, and the quick
soak and fuzzing runs hold."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def run_script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=True
    )


def test_load_benchmark_at_concurrency_8_gets_every_face_right(tmp_path):
    # Eight clients at once against one uvicorn: every answer must hold exactly the workload's faces.
    out = tmp_path / "load.json"
    run_script("benchmarks/load.py", "--concurrency", "8", "--seconds", "4", "--warm-up", "1", "--json", str(out))
    cells = json.loads(out.read_text())["cells"]
    assert [c["workload"] for c in cells] == ["one face 640x480", "five faces 1920x1080", "no face 600x400"]
    for cell in cells:
        assert cell["requests"] > 0, cell
        assert cell["errors"] == 0, cell
        assert 0 < cell["p50_ms"] <= cell["p95_ms"] <= cell["p99_ms"]
        assert cell["server_peak_rss_mb"] > 50
    assert cells[1]["faces_per_s"] == pytest.approx(5 * cells[1]["requests_per_s"], rel=0.01)


def test_stage_profile_runs_and_the_pipeline_costs_more_than_its_detection(tmp_path):
    out = tmp_path / "stages.json"
    run_script("benchmarks/stages.py", "--runs", "2", "--json", str(out))
    results = json.loads(out.read_text())["results"]
    assert [r["faces"] for r in results] == [1, 5, 0]
    for r in results:
        stages = r["cpu_ms"]
        assert all(ms >= 0 for ms in stages.values())
        assert stages["whole pipeline (predict_bytes)"] > stages["classify all faces, one batch"]


def test_quick_soak_holds(tmp_path):
    # Mixed valid and hostile traffic at concurrency 16, then SIGTERM with requests in flight, then a restart.
    out = tmp_path / "soak.json"
    run_script("benchmarks/soak.py", "--quick", "--out", str(out))
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


def test_coverage_guided_fuzzing_finds_no_crash(tmp_path):
    # libFuzzer mutates the hostile corpus for 15 s; any exception but the service's own refusals is a crash.
    result = run_script("benchmarks/fuzz_decode.py", "--quick", "--artifacts", str(tmp_path), timeout=120)
    output = result.stdout + result.stderr
    assert not list(tmp_path.glob("crash-*")), output[-3000:]
    runs = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", output).group(1))
    new_units = int(re.search(r"stat::new_units_added:\s+(\d+)", output).group(1))
    assert runs > 1000 and new_units > 0  # it really ran, and coverage steered it
