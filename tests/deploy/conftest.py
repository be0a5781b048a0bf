"""The container tests' fixtures: a Docker engine (or a skip saying why there is none) and the built image.

Where FACEGENDER_DEPLOY_TESTS=required (as .ci/run sets it after deploy/local-engine.sh), a missing engine
fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import socket
import time
from typing import NoReturn

import pytest

from benchmarks.container import Stack, engine_problem, image_size

IMAGE = "facegender:local"
HOST_PORTS = (8000, 9090)


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("FACEGENDER_DEPLOY_TESTS") == "required":
        pytest.fail(f"{reason} (FACEGENDER_DEPLOY_TESTS=required)")
    pytest.skip(reason)


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and Prometheus bind
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


@pytest.fixture(scope="package")
def engine() -> None:
    """A Docker engine with Compose v2, and the host ports the containers listen on free."""
    problem = engine_problem()
    if problem:
        unavailable(f"the container tests need a Docker engine: {problem}; deploy/local-engine.sh starts one")
    deadline = time.monotonic() + 60  # another process's server on one of them may be about to stop
    while taken := [port for port in HOST_PORTS if port_taken(port)]:
        if time.monotonic() > deadline:
            unavailable(f"the containers use the host's network and need ports {HOST_PORTS}; in use: {taken}")
        time.sleep(1)


@pytest.fixture(scope="package")
def image(engine: None, pytestconfig: pytest.Config) -> str:
    """The image, built from the Dockerfile as `docker compose build` builds it; its size goes to the log."""
    started = time.monotonic()
    Stack("facegender-test").build()
    seconds = time.monotonic() - started
    report(pytestconfig, f"{IMAGE}: {image_size(IMAGE) / 1e6:.1f} MB, built in {seconds:.0f} s")
    return IMAGE


def report(pytestconfig: pytest.Config, line: str) -> None:
    """Write a measured figure to the terminal, past pytest's output capture, so that CI's log keeps it."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\n{line}")
