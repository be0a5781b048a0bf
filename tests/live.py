"""Real processes for tests: free loopback ports, a uvicorn serving the app, bounded waits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    what: str, ready: Callable[[], bool], timeout: float, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll ``ready`` until it is true; fail with the end of the process's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"{what} exited early:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"{what} not ready within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def launch_service(log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn serving service.app:app on a free loopback port, with extra environment; its log goes to a file."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def start_service(log: Path, timeout: float = 90) -> tuple[subprocess.Popen[bytes], str]:
    """A launched service, once /readyz answers 200; so no pipe fills, its log goes to a file."""
    process, base = launch_service(log)
    wait_until("uvicorn", lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200, timeout, process, log)
    return process, base
