"""The real service scraped by a real Prometheus: every dashboard and rule expression returns data."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import FIXTURES
from tests.live import free_port, start_service, stop, wait_until
from tests.monitoring.queries import (
    COMPOSE,
    POD_LABELS,
    PROMETHEUS_CONFIG,
    Query,
    adapter_queries,
    concrete,
    dashboard_queries,
    load_yaml,
    rule_queries,
    variable_queries,
)

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TRAFFIC_SECONDS = 12
DASHBOARD_QUERIES = dashboard_queries() + variable_queries()
RULE_QUERIES = rule_queries()
ADAPTER_QUERIES = adapter_queries()
# Prometheus reports nanoseconds; Python 3.11 parses at most microseconds, and whole seconds suffice here.
_RFC3339 = re.compile(r"^([0-9-]+T[0-9:]+)(\.[0-9]+)?(Z|[+-][0-9:]+)$")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn serving service.app:app on a free loopback port; its log goes to a file so no pipe fills up."""
    process, base = start_service(tmp_path_factory.mktemp("service") / "uvicorn.log")
    try:
        yield base
    finally:
        stop(process)


def scrape_config(service_base: str, prometheus_port: int, directory: Path) -> Path:
    """monitoring/prometheus.yml with the live service as the only facegender target and 1 s intervals."""
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    facegender = jobs["facegender"]
    # The compose file finds replicas by DNS; here there is one, on loopback.
    assert facegender.pop("dns_sd_configs"), "the facegender job is expected to use DNS discovery"
    facegender["static_configs"] = [{"targets": [service_base.removeprefix("http://")], "labels": POD_LABELS}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str((PROMETHEUS_CONFIG.parent / pattern).resolve()) for pattern in config["rule_files"]]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def prometheus(service: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Prometheus server scraping the live service and evaluating our rules."""
    if not Path(PROMETHEUS).is_file():
        pytest.skip("needs the Prometheus server (Debian package `prometheus`; .ci/run installs it)")
    directory = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = scrape_config(service, port, directory)
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until("prometheus", lambda: httpx.get(f"{base}/-/ready", timeout=1).status_code == 200, 30, process, log)
        yield base
    finally:
        stop(process)


def send_traffic(base: str) -> int:
    """Exercise every route, both images, a bad upload and an unknown path; returns the /predict count."""
    astronaut = (FIXTURES / "astronaut.jpg").read_bytes()
    coffee = (FIXTURES / "coffee.jpg").read_bytes()
    predicts = 0
    deadline = time.monotonic() + TRAFFIC_SECONDS
    with httpx.Client(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline:
            for image in (astronaut, coffee):
                assert client.post("/predict", files={"image": ("a.jpg", image, "image/jpeg")}).status_code == 200
            assert client.post("/predict", content=b"not an image", headers={"content-type": "image/jpeg"}).is_error
            predicts += 3
            batch = [("images", ("a.jpg", astronaut, "image/jpeg")), ("images", ("b.jpg", coffee, "image/jpeg"))]
            assert client.post("/predict/batch", files=batch).status_code == 200
            annotate = client.post("/annotate", files={"image": ("a.jpg", astronaut, "image/jpeg")})
            assert annotate.status_code == 200
            for path in ("/healthz", "/readyz", "/v1/models"):
                assert client.get(path).status_code == 200
            assert client.get("/no-such-route").status_code == 404
    return predicts


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}\n{body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _evaluated_after(prometheus: str, moment: datetime) -> bool:
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    stamps = [_RFC3339.sub(r"\1\3", rule["lastEvaluation"]) for group in groups for rule in group["rules"]]
    return all(datetime.fromisoformat(stamp.replace("Z", "+00:00")) > moment for stamp in stamps)


@pytest.fixture(scope="module")
def scraped(service: str, prometheus: str) -> str:
    """Prometheus after it has scraped all the traffic and evaluated every rule since."""
    predicts = send_traffic(service)
    deadline = time.monotonic() + 20
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = query(prometheus, 'sum(facegender_requests_total{job="facegender", route="/predict"})')
        if seen and float(seen[0]["value"][1]) == predicts:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"Prometheus saw {seen} /predict requests of {predicts} within 20 s")
    scraped_at = datetime.now(UTC)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _evaluated_after(prometheus, scraped_at):
            return prometheus
        time.sleep(0.5)
    pytest.fail("Prometheus did not evaluate every rule within 10 s of the last scrape")


def _assert_returns_data(prometheus: str, item: Query) -> None:
    result = query(prometheus, concrete(item.expr))
    assert result, f"{item.source}: no data for\n{concrete(item.expr)}"
    values = [float(series["value"][1]) for series in result]
    assert any(math.isfinite(value) for value in values), f"{item.source}: only NaN/Inf {values}"
    for label in item.legend_labels:
        assert all(label in series["metric"] for series in result), f"{item.source}: no label {label!r}: {result}"


@pytest.mark.parametrize("item", DASHBOARD_QUERIES, ids=[item.source for item in DASHBOARD_QUERIES])
def test_dashboard_expression_returns_data(scraped: str, item: Query) -> None:
    assert "$" not in concrete(item.expr), f"{item.source}: a Grafana variable the test does not know"
    _assert_returns_data(scraped, item)


@pytest.mark.parametrize("item", RULE_QUERIES, ids=[item.source for item in RULE_QUERIES])
def test_rule_expression_returns_data(scraped: str, item: Query) -> None:
    _assert_returns_data(scraped, item)


@pytest.mark.parametrize("item", ADAPTER_QUERIES, ids=[item.source for item in ADAPTER_QUERIES])
def test_the_autoscaler_metric_returns_data_for_a_pod(scraped: str, item: Query) -> None:
    _assert_returns_data(scraped, item)
    # The scrape that reads the gauge is itself in flight, so a live pod never reports less than one.
    assert all(float(series["value"][1]) >= 1 for series in query(scraped, item.expr)), item.expr


def test_every_rule_evaluates_without_error_and_none_fires(scraped: str) -> None:
    groups = httpx.get(f"{scraped}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {item.source.split(" operand")[0] for item in RULE_QUERIES}
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    # A healthy service under normal traffic: nothing may even be pending. Latency is left out: it
    # depends on how busy the machine running the test is.
    active = [rule["name"] for rule in rules if rule.get("state", "inactive") != "inactive"]
    assert [name for name in active if name != "FacegenderHighLatencyP95"] == []


def test_both_targets_are_up(scraped: str) -> None:
    targets = httpx.get(f"{scraped}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert sorted((t["labels"]["job"], t["health"]) for t in targets) == [("facegender", "up"), ("prometheus", "up")]


def test_compose_healthchecks_pass_against_the_live_processes(service: str, prometheus: str) -> None:
    services = load_yaml(COMPOSE)["services"]
    command = services["facegender"]["healthcheck"]["test"]
    assert command[:2] == ["CMD", "python"]
    script = command[-1].replace("127.0.0.1:8000", service.removeprefix("http://"))
    assert subprocess.run([sys.executable, "-c", script], timeout=30, check=False).returncode == 0
    # The same check against a port nobody listens on must fail, or it proves nothing.
    dead = command[-1].replace("127.0.0.1:8000", f"127.0.0.1:{free_port()}")
    assert subprocess.run([sys.executable, "-c", dead], capture_output=True, timeout=30, check=False).returncode != 0
    url = services["prometheus"]["healthcheck"]["test"][-1]
    assert httpx.get(url.replace("http://127.0.0.1:9090", prometheus), timeout=5).status_code == 200
