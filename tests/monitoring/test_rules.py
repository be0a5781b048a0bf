"""The Prometheus config and alerting rules: promtool accepts them and their unit tests pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.monitoring.queries import PROMETHEUS_CONFIG, RULE_TESTS, RULES, alerting_rules, load_yaml, operands

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian package `prometheus`; .ci/run installs it)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


@needs_promtool
def test_promtool_accepts_the_config_and_its_rules() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in result.stdout


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - firing == set(), "alerts no unit test shows firing"
    assert names - quiet == set(), "alerts no unit test shows quiet"


def test_every_alert_has_a_severity_a_delay_and_text_for_the_operator() -> None:
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule.get("for"), f"{rule['alert']} would fire on a single bad evaluation"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_config_scrapes_the_service_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert [(PROMETHEUS_CONFIG.parent / pattern).resolve() for pattern in config["rule_files"]] == [RULES]
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "facegender")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["dns_sd_configs"] == [{"names": ["facegender"], "type": "A", "port": 8000, "refresh_interval": "30s"}]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="x"} == 0', ['up{job="x"}']),
        ('absent(up{job="x"})', ['up{job="x"}']),
        ("abs(a - b) > 0.25\nand\nsum(c) >= 100", ["abs(a - b)", "sum(c)"]),
        ('(sum(r{s="5xx"}) or vector(0)) / sum(r) > 5e-2', ['(sum(r{s="5xx"}) or vector(0)) / sum(r)']),
        ('a > bool 1 unless on (instance) b{l="x and y > 1"}', ["a", 'b{l="x and y > 1"}']),
        ("sum by (le) (rate(candy_total[5m]))", ["sum by (le) (rate(candy_total[5m]))"]),
    ],
)
def test_operands_split_at_top_level_comparisons_only(expr: str, expected: list[str]) -> None:
    assert operands(expr) == expected
