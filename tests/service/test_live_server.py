import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import FIXTURES, ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server():
    """A real uvicorn process serving service.app:app on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"uvicorn exited early:\n{process.stdout.read()}")
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("uvicorn did not become ready within 60 s")
    yield base, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_live_server_predicts_over_real_http(live_server):
    base, _ = live_server
    with (FIXTURES / "astronaut.jpg").open("rb") as handle:
        response = httpx.post(f"{base}/predict", files={"image": ("astronaut.jpg", handle, "image/jpeg")}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert len(body["faces"]) == 1 and response.headers["x-request-id"]
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert 'facegender_requests_total{route="/predict",status="2xx"} 1.0' in metrics


def test_live_server_stops_cleanly_on_sigterm(live_server):
    _, process = live_server
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    log = process.stdout.read()
    assert "ready: model" in log and "Application shutdown complete" in log
    assert "Traceback" not in log


def test_predict_command_prints_json_lines(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "predict", str(FIXTURES / "astronaut.jpg"), str(FIXTURES / "coffee.jpg"),
         str(bad)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(line.get("faces", [])) for line in lines] == [1, 0, 0]
    assert "error" in lines[2] and result.returncode == 1
