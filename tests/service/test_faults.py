"""Broken model or detector files: a real uvicorn process refuses to start, fast, and its log names the file."""

import contextlib
import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from service.config import BUNDLED_MODEL
from service.weights import INSTALL_COMMAND
from tests.live import launch_service, stop

STARTUP_SECONDS = 60  # a healthy start takes a few seconds here; a hang would run into this


def model_copy(folder: Path, onnx: bytes | None = None, fix_sha: bool = False) -> Path:
    """The bundled model and metadata copied into ``folder``, optionally with other ONNX bytes."""
    folder.mkdir()
    model = folder / "gender.onnx"
    model.write_bytes(BUNDLED_MODEL.read_bytes() if onnx is None else onnx)
    metadata = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())
    if fix_sha:  # a file that matches its metadata but is not a usable graph
        metadata["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(metadata))
    return model


def faults(root: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Each fault: the environment that causes it, and what its start-up error must say (the path first)."""
    missing = root / "nowhere" / "gender.onnx"
    truncated = model_copy(root / "truncated", BUNDLED_MODEL.read_bytes()[:5000])
    wrong = model_copy(root / "wrong", b"this is not an ONNX graph" * 100, fix_sha=True)
    no_json = model_copy(root / "no_json")
    no_json.with_suffix(".json").unlink()
    detector_dir = root / "detector"
    detector_dir.mkdir()
    # A missing model file says which setting points at the model, so the user knows what to change.
    return {
        "missing onnx": ({"FACEGENDER_MODEL": str(missing)}, [str(missing), "set FACEGENDER_MODEL"]),
        "truncated onnx": ({"FACEGENDER_MODEL": str(truncated)}, [str(truncated)]),
        "wrong onnx": ({"FACEGENDER_MODEL": str(wrong)}, [str(wrong)]),
        "missing metadata": (
            {"FACEGENDER_MODEL": str(no_json)},
            [str(no_json.with_suffix(".json")), "FACEGENDER_MODEL"],
        ),
        "missing detector": (
            {"FACEGENDER_DETECTOR": "ssd", "FACEGENDER_DETECTOR_DIR": str(detector_dir)},
            [str(detector_dir / "deploy.prototxt.txt")],
        ),
        # A fresh install that skipped the weights step: the log must say which command fetches them.
        "weights not installed": ({"FACEGENDER_WEIGHTS_DIR": str(root / "no-weights")}, [INSTALL_COMMAND]),
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Start one server per fault, all at once, and wait for each to exit; note whether any got ready."""
    root = tmp_path_factory.mktemp("faults")
    started, results = {}, {}
    for name, (env, said) in faults(root).items():
        log = root / f"{name.replace(' ', '_')}.log"
        started[name] = (*launch_service(log, env), log, said, time.monotonic())
    for name, (process, base, log, said, t0) in started.items():
        ready = False
        while process.poll() is None and time.monotonic() < t0 + STARTUP_SECONDS:
            with contextlib.suppress(httpx.TransportError):
                ready = ready or httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            time.sleep(0.2)
        stop(process)
        results[name] = {"code": process.returncode, "seconds": time.monotonic() - t0, "log": log.read_text(),
                         "ready": ready, "said": said}  # fmt: skip
    return results


@pytest.mark.parametrize(
    "fault",
    ["missing onnx", "truncated onnx", "wrong onnx", "missing metadata", "missing detector", "weights not installed"],
)
def test_a_broken_file_stops_the_start_and_is_named(outcomes, fault):
    outcome = outcomes[fault]
    assert not outcome["ready"], "a server with a broken file answered /readyz 200"
    assert outcome["code"] > 0, outcome["log"][-2000:]  # exited by itself (stop() would give -9), with an error
    assert outcome["seconds"] < STARTUP_SECONDS
    for text in outcome["said"]:
        assert text in outcome["log"], outcome["log"][-2000:]
