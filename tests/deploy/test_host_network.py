"""deploy/host-network: the compose override puts every service it starts on the host's network, and its
Prometheus config is monitoring/prometheus.yml but for how the one replica is found."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import yaml

from benchmarks.container import COMPOSE_FILE, HOST_NETWORK_OVERRIDE
from tests.conftest import ROOT
from tests.deploy.conftest import unavailable
from tests.monitoring.queries import PROMETHEUS_CONFIG, load_yaml

HOST_PROMETHEUS_CONFIG = ROOT / "deploy" / "host-network" / "prometheus.yml"


def facegender_job(config: dict[str, Any]) -> dict[str, Any]:
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "facegender"]
    return job


def test_the_prometheus_config_differs_only_in_how_the_replica_is_found() -> None:
    project, host = load_yaml(PROMETHEUS_CONFIG), load_yaml(HOST_PROMETHEUS_CONFIG)
    assert facegender_job(host).pop("static_configs") == [{"targets": ["127.0.0.1:8000"]}]
    assert facegender_job(project).pop("dns_sd_configs")
    assert host == project


def compose_config() -> dict[str, Any]:
    """Both files merged and interpolated by Compose v2 itself."""
    if shutil.which("docker") is None:
        unavailable("needs the docker CLI with Compose v2 (deploy/local-engine.sh installs it)")
    # A docker CLI without the Compose v2 plugin rejects `compose` or, as Debian's does, its first flag.
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60, check=False)
    if plugin.returncode != 0 or "compose" not in plugin.stdout.lower():
        unavailable("needs Compose v2 (`docker compose`; deploy/local-engine.sh installs it)")
    files = ["--file", str(COMPOSE_FILE), "--file", str(HOST_NETWORK_OVERRIDE)]
    result = subprocess.run(["docker", "compose", "--project-directory", str(ROOT), *files, "config"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_every_service_started_is_on_the_hosts_network_and_grafana_is_left_out() -> None:
    services = compose_config()["services"]
    assert set(services) == {"facegender", "prometheus"}, "Grafana is in a profile, so not started"
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert not service.get("ports"), f"{name}: host networking publishes no ports"
    assert services["facegender"]["build"]["network"] == "host"
    mounts = {volume["target"]: volume["source"] for volume in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == str(HOST_PROMETHEUS_CONFIG)
    assert mounts["/etc/prometheus/rules"] == str(ROOT / "monitoring" / "rules")
