"""The atheris harness' quick mode: libFuzzer mutates the hostile corpus for 15 s and finds no crash."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_coverage_guided_fuzzing_finds_no_crash(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fuzz_decode.py"), "--quick"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not list(tmp_path.glob("crash-*")), output[-3000:]
    runs = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", output).group(1))
    new_units = int(re.search(r"stat::new_units_added:\s+(\d+)", output).group(1))
    assert runs > 1000 and new_units > 0  # it really ran, and coverage steered it
