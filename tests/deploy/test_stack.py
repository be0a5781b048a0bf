"""`docker compose up` for real (docker-compose.yml with deploy/host-network/compose.yml): Prometheus scrapes the
service's container and counts its traffic; under load the container stays inside its memory limit; SIGTERM
lets requests in flight finish; a killed container comes back under the restart policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks.container import (
    PROMETHEUS_URL,
    SERVICE_URL,
    Stack,
    answers_ready,
    compose_services,
    inspect,
    load_in_container,
    memory_limit,
    wait_for,
)
from tests.deploy.conftest import report
from tests.monitoring.queries import alerting_rules

pytestmark = [pytest.mark.slow, pytest.mark.docker]

# Prometheus scrapes every 15 s (monitoring/prometheus.yml), so waits for a scrape allow a few of them.
SCRAPE_WAIT = 60


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    stack = Stack("facegender-test")
    stack.down()  # whatever an interrupted run left: the counts below need a new container
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def query(expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{PROMETHEUS_URL}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_compose_brings_up_the_service_and_prometheus_healthy_and_no_grafana(stack: Stack) -> None:
    for service in ("facegender", "prometheus"):
        assert inspect(stack.container(service))["State"]["Health"]["Status"] == "healthy", service
    assert "grafana" not in stack.compose("ps", "--all", "--services").split()


def test_the_container_gets_the_limits_and_settings_of_the_compose_file(stack: Stack) -> None:
    service = compose_services()["facegender"]
    host = inspect(stack.container())["HostConfig"]
    assert host["Memory"] == memory_limit()
    assert host["NanoCpus"] == float(service["deploy"]["resources"]["limits"]["cpus"]) * 1e9
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["RestartPolicy"]["Name"] == service["restart"]


def test_prometheus_scrapes_the_service_container_and_loads_the_alert_rules(stack: Stack) -> None:
    def facegender_up() -> bool:
        targets = httpx.get(f"{PROMETHEUS_URL}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return any(t["labels"]["job"] == "facegender" and t["health"] == "up" for t in targets)

    wait_for("the facegender target up", facegender_up, SCRAPE_WAIT, interval=1)
    groups = httpx.get(f"{PROMETHEUS_URL}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert set(loaded) == {rule["alert"] for rule in alerting_rules()}
    wait_for("every rule evaluated", lambda: _all_rules_ok(), SCRAPE_WAIT, interval=1)


def _all_rules_ok() -> bool:
    groups = httpx.get(f"{PROMETHEUS_URL}/api/v1/rules", timeout=10).json()["data"]["groups"]
    return all(rule["health"] == "ok" for group in groups for rule in group["rules"])


def test_prometheus_counts_the_requests_this_test_sent(stack: Stack) -> None:
    # No other test asks for /v1/models, and the container is new: Prometheus must see exactly these.
    sent = 7
    for _ in range(sent):
        assert httpx.get(f"{SERVICE_URL}/v1/models", timeout=10).status_code == 200
    expr = 'sum(facegender_requests_total{job="facegender", route="/v1/models", status="2xx"})'

    def counted() -> bool:
        result = query(expr)
        return bool(result) and float(result[0]["value"][1]) == sent

    wait_for(f"{expr} == {sent}", counted, SCRAPE_WAIT, interval=1)


def test_under_the_five_face_load_at_16_clients_it_stays_inside_the_compose_memory_limit(
    stack: Stack, pytestconfig: pytest.Config
) -> None:
    result = load_in_container(stack, seconds=10, warm_up=2)
    report(
        pytestconfig,
        f"{result['workload']} at {result['concurrency']} clients in the container: "
        f"{result['requests_per_s']} requests/s, p99 {result['p99_ms']:.0f} ms, "
        f"peak RSS {result['process_peak_rss_mib']} MiB, container peak {result['container_peak_memory_mib']} MiB "
        f"of {result['compose_memory_limit_mib']:.0f} MiB",
    )
    assert result["requests"] > 0
    assert result["errors"] == 0, result["error_kinds"]  # no 5xx, no transport error, every face found
    assert result["engine_memory_limit_mib"] == result["compose_memory_limit_mib"]
    assert result["container_peak_memory_mib"] < result["compose_memory_limit_mib"]
    assert result["process_peak_rss_mib"] < result["compose_memory_limit_mib"]
    assert not inspect(stack.container())["State"]["OOMKilled"]


def test_sigterm_lets_the_requests_in_flight_finish_and_exits_0_within_the_grace_period(stack: Stack) -> None:
    try:
        result = stack.stop_with_requests_in_flight(clients=16)
    finally:
        stack.compose("start", "facegender")
        wait_for("/readyz 200 after start", answers_ready, 120)
    assert result["in_flight_at_sigterm"] == 16, result
    assert result["completed_200"] == 16, result
    assert result["exit_code"] == 0 and not result["oom_killed"], result
    assert result["exit_seconds_after_sigterm"] < result["grace_period_seconds"], result


def test_a_killed_container_comes_back_under_the_restart_policy_and_turns_ready(stack: Stack) -> None:
    result = stack.crash_and_recover(timeout=120)
    assert result["restart_policy"] == compose_services()["facegender"]["restart"] == "unless-stopped"
    assert result["restarts"] == 1
    assert answers_ready()
