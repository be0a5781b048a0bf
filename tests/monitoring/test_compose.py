"""docker-compose.yml: valid for Compose, and wired to the service, the monitoring files and each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.monitoring.queries import COMPOSE, DATASOURCES, MONITORING, PROMETHEUS_CONFIG, load_yaml

DOCKER_COMPOSE = shutil.which("docker-compose")
needs_docker_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="needs docker-compose (Debian package `docker-compose`; .ci/run installs it)"
)


def compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config`: validates against Compose's schema and interpolates; needs no engine.

    An empty env file stands in for any .env an operator keeps beside the compose file.
    """
    assert DOCKER_COMPOSE is not None
    env_file = tmp_path / "empty.env"
    env_file.touch()
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("GRAFANA_", "FACEGENDER_"))}
    return subprocess.run(
        [DOCKER_COMPOSE, "--file", str(COMPOSE), "--env-file", str(env_file), "config"],
        cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return services


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> host path, for the bind mounts of a service."""
    mounts = {}
    for volume in services()[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = source
    return mounts


@needs_docker_compose
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    result = compose_config(tmp_path)
    assert result.returncode == 0, result.stderr


@needs_docker_compose
def test_docker_compose_rejects_an_unknown_key(tmp_path: Path) -> None:
    """Guards the check above: a misspelt option must fail validation, not be ignored."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restarts: unless-stopped", 1))
    assert DOCKER_COMPOSE is not None
    result = subprocess.run(
        [DOCKER_COMPOSE, "--file", str(broken), "config", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "restarts" in result.stderr


@needs_docker_compose
def test_grafana_admin_password_comes_from_the_environment_with_a_default(tmp_path: Path) -> None:
    default = yaml.safe_load(compose_config(tmp_path).stdout)["services"]["grafana"]["environment"]
    assert default["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    chosen = yaml.safe_load(compose_config(tmp_path, GRAFANA_ADMIN_PASSWORD="s3cret").stdout)["services"]["grafana"]
    assert chosen["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_the_service_is_built_here_and_runs_with_limits_and_a_readiness_healthcheck() -> None:
    service = services()["facegender"]
    assert service["build"] == "."
    assert service["ports"] == ["8000:8000"]
    assert service["restart"] == "unless-stopped"
    assert "/readyz" in service["healthcheck"]["test"][-1]
    limits = service["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) >= 1 and re.fullmatch(r"\d+[mg]", limits["memory"])
    assert all(key.startswith("FACEGENDER_") for key in service["environment"])
    # The bundled model is in the image; mounting over /app/models would hide it.
    assert not any(":/app" in volume for volume in service.get("volumes", []))


def test_the_compose_healthcheck_is_the_dockerfile_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (healthcheck,) = re.findall(r"^HEALTHCHECK .*? CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)
    assert yaml.safe_load(healthcheck) == services()["facegender"]["healthcheck"]["test"][1:]


def test_third_party_images_are_official_and_pinned() -> None:
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", services()["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:12\.\d+\.\d+", services()["grafana"]["image"])
    for name in ("prometheus", "grafana"):
        assert services()[name]["restart"] == "unless-stopped"
        assert services()[name]["deploy"]["resources"]["limits"]["memory"]


def test_prometheus_and_grafana_keep_their_data_in_named_volumes() -> None:
    compose = load_yaml(COMPOSE)
    assert "prometheus-data:/prometheus" in compose["services"]["prometheus"]["volumes"]
    assert "grafana-data:/var/lib/grafana" in compose["services"]["grafana"]["volumes"]
    assert set(compose["volumes"]) == {"prometheus-data", "grafana-data"}
    assert "--storage.tsdb.path=/prometheus" in compose["services"]["prometheus"]["command"]


def test_prometheus_gets_our_config_and_rules_where_the_config_looks_for_them() -> None:
    mounts = bind_mounts("prometheus")
    config_path = next(target for target, source in mounts.items() if source == "./monitoring/prometheus.yml")
    assert f"--config.file={config_path}" in services()["prometheus"]["command"]
    for pattern in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        in_container = PurePosixPath(config_path).parent / pattern
        mounted = [target for target in mounts if in_container.is_relative_to(target)]
        assert mounted, f"{in_container} is not inside any bind mount"
        on_host = ROOT / mounts[mounted[0]] / in_container.relative_to(mounted[0])
        assert on_host.is_file(), on_host


def test_grafana_is_provisioned_with_our_datasource_and_dashboards() -> None:
    mounts = bind_mounts("grafana")
    for target, source in mounts.items():
        assert (ROOT / source).is_dir(), source
        assert target.startswith("/etc/grafana/"), target
    provisioning = MONITORING / "grafana" / "provisioning"
    (provider,) = load_yaml(provisioning / "dashboards" / "dashboards.yml")["providers"]
    assert mounts[provider["options"]["path"]] == "./monitoring/grafana/dashboards"
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / mounts[str(PurePosixPath(home).parent)] / PurePosixPath(home).name).is_file()
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "9090:9090" in services()["prometheus"]["ports"]
    assert mounts["/etc/grafana/provisioning/datasources"] == "./monitoring/grafana/provisioning/datasources"
