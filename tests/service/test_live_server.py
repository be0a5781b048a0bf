import json
import signal
import subprocess
import sys

import httpx
import pytest

from tests.conftest import FIXTURES, ROOT
from tests.live import start_service, stop


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """A real uvicorn process serving service.app:app on a free loopback port, and its log file."""
    log = tmp_path_factory.mktemp("live") / "uvicorn.log"
    process, base = start_service(log)
    yield base, process, log
    stop(process)


def test_live_server_predicts_over_real_http(live_server):
    base, _, _ = live_server
    with (FIXTURES / "astronaut.jpg").open("rb") as handle:
        response = httpx.post(f"{base}/predict", files={"image": ("astronaut.jpg", handle, "image/jpeg")}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert len(body["faces"]) == 1 and response.headers["x-request-id"]
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert 'facegender_requests_total{route="/predict",status="2xx"} 1.0' in metrics


def test_logs_hold_no_image_bytes_names_or_client_data(live_server):
    base, _, log_path = live_server
    secrets = ["holiday-secret-4821.jpg", "MARKER-PIXELS-5678", "0.123456", "203.0.113.77"]
    headers = {"X-Request-ID": "log-check-1", "X-Forwarded-For": secrets[3]}
    photo = (FIXTURES / "astronaut.jpg").read_bytes()
    for data in (photo, b"II*\x00" + secrets[1].encode() * 4, b"\xff\xd8\xff" + secrets[1].encode()):
        httpx.post(f"{base}/predict", params={"min_confidence": secrets[2]}, headers=headers, timeout=30,
                   files={"image": (secrets[0], data, "image/jpeg")})  # fmt: skip
    httpx.post(f"{base}/predict", content=b"\0" * 20_000_000, headers={**headers, "content-type": "image/jpeg"})
    log = log_path.read_text()
    lines = [line for line in log.splitlines() if "[log-check-1]" in line]
    assert any("POST /predict 200" in line for line in lines) and any("POST /predict 413" in line for line in lines)
    assert any("refused: invalid_image (400)" in line for line in lines)
    for secret in secrets:
        assert secret not in log


def test_live_server_stops_cleanly_on_sigterm(live_server):
    _, process, log_path = live_server
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    log = log_path.read_text()
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
