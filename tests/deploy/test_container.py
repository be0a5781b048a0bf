"""The image on a real Docker engine, run by itself with the compose file's security settings: what it holds,
who it runs as, its own HEALTHCHECK, and the same answers as the service run locally."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from benchmarks.container import SERVICE_URL, compose_services, docker, docker_result, health, inspect, wait_for
from tests.conftest import FIXTURES, ROOT
from tests.live import start_service, stop

pytestmark = [pytest.mark.slow, pytest.mark.docker]

NAME = "facegender-test-container"
DEPLOYMENT = ROOT / "deploy" / "k8s" / "base" / "deployment.yaml"


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    """The image run as docker-compose.yml runs it (read-only root, tmpfs), healthy by its own HEALTHCHECK."""
    service = compose_services()["facegender"]
    options = ["--read-only"] if service.get("read_only") else []
    for path in service.get("tmpfs", []):
        options += ["--tmpfs", path]
    docker("rm", "--force", NAME, check=False)
    container = docker("run", "--detach", "--name", NAME, "--network", "host", *options, image).strip()
    try:
        try:
            wait_for("healthy", lambda: health(container) == "healthy", 120, interval=1)
        except TimeoutError as exc:
            pytest.fail(f"{exc}: {inspect(container)['State']}\n{docker('logs', container, check=False)[-3000:]}")
        yield container
    finally:
        docker("rm", "--force", container, check=False)


def in_image(image: str, code: str, *options: str) -> Any:
    """What a Python snippet run with the image's interpreter prints, as JSON."""
    # As root, so that nothing is hidden by permissions (the image itself runs as 10001).
    output = docker("run", "--rm", "--network", "none", "--user", "0", *options, "--entrypoint", "python", image,
                    "-c", code)  # fmt: skip
    return json.loads(output)


def test_the_final_stage_holds_the_detector_weights_and_no_installer_build_leftovers_or_extras(image: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = sorted({spec.split("=")[0].split("<")[0].split(">")[0].split("[")[0].strip().lower().replace("-", "_")
                     for group in pyproject["optional-dependencies"].values() for spec in group})  # fmt: skip
    found = in_image(
        image,
        f"""
import importlib.util, json, pathlib
venv = pathlib.Path('/opt/venv')
print(json.dumps({{
    'installers': [m for m in ('pip', 'setuptools', 'wheel', 'pkg_resources') if importlib.util.find_spec(m)],
    'extras': [m for m in {extras!r} if importlib.util.find_spec(m)],
    'test_suites': [str(p) for p in venv.rglob('tests') if p.is_dir()],
    'pip_scripts': [p.name for p in (venv / 'bin').glob('pip*')],
    'leftovers': [p for p in ('/tmp/requirements.txt', '/tmp/pyproject.toml', '/tmp/src', '/root/.cache/pip',
                              '/root/.npm', '/usr/bin/npm', '/usr/bin/node') if pathlib.Path(p).exists()],
    'detector_weights': sorted(p.name for p in (venv / 'share' / 'facegender').rglob('*.onnx')),
}}))
""",
    )
    assert found == {"installers": [], "extras": [], "test_suites": [], "pip_scripts": [], "leftovers": [],
                     "detector_weights": ["face_detection_back_256x256.onnx"]}  # fmt: skip


def test_the_image_serves_what_the_service_needs(image: str) -> None:
    """Guards the trimming above: everything the service imports is still there."""
    found = in_image(image, "import json, service.app, cv2, onnxruntime; print(json.dumps(cv2.__version__))")
    assert found


def test_opencv_sizes_its_threads_by_the_containers_cpu_limit(image: str) -> None:
    """So FACEGENDER_OPENCV_THREADS can stay 0 under a CPU limit (docs/deploying.md): one CPU, one thread."""
    assert in_image(image, "import cv2; print(cv2.getNumberOfCPUs())", "--cpus", "1") == 1


def test_it_runs_as_uid_10001_on_a_read_only_root_with_a_writable_tmp(container: str) -> None:
    assert docker("exec", container, "id", "-u").strip() == "10001"
    assert inspect(container)["HostConfig"]["ReadonlyRootfs"] is True
    for path in ("/app/x", "/opt/venv/x", "/x"):
        result = docker_result("exec", container, "touch", path)
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (path, result.stderr)
    docker("exec", container, "touch", "/tmp/x")


def test_its_own_healthcheck_is_what_turned_it_healthy(image: str, container: str) -> None:
    from_image = inspect(image)["Config"]["Healthcheck"]
    assert "/readyz" in " ".join(from_image["Test"])
    assert inspect(container)["Config"]["Healthcheck"] == from_image
    assert health(container) == "healthy"
    log = inspect(container)["State"]["Health"]["Log"]
    assert log and log[-1]["ExitCode"] == 0


def without_timings(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "timings_ms"}


def test_predict_gives_the_same_json_as_the_service_run_locally(container: str, tmp_path: Path) -> None:
    process, local = start_service(tmp_path / "uvicorn.log")
    try:
        for photo in sorted(FIXTURES.glob("*.jpg")):
            files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
            answers = [httpx.post(f"{base}/predict", files=files, timeout=60) for base in (SERVICE_URL, local)]
            assert [a.status_code for a in answers] == [200, 200], photo.name
            in_container, here = (without_timings(a.json()) for a in answers)
            assert in_container == here, photo.name
    finally:
        stop(process)


def test_metrics_answer_with_the_service_ready(container: str) -> None:
    metrics = httpx.get(f"{SERVICE_URL}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "facegender_ready 1.0" in metrics.text
    assert "facegender_requests_total" in metrics.text


def test_the_kubernetes_probes_and_pre_stop_command_work_in_the_image(container: str) -> None:
    (spec,) = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = spec[probe]["httpGet"]["path"]
        assert httpx.get(f"{SERVICE_URL}{path}", timeout=5).status_code == 200, probe
    docker("exec", container, *spec["lifecycle"]["preStop"]["exec"]["command"])
