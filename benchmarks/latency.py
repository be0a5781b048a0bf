"""End-to-end latency of POST /predict on a live uvicorn server, one request at a time.

Starts `uvicorn service.app:app` on a free loopback port (or uses --url), sends a 640x480 JPEG with
one face N times at concurrency 1, and prints the median and p99 in milliseconds as JSON.

Usage: python benchmarks/latency.py [--requests 200] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def one_face_640x480() -> bytes:
    """The astronaut portrait placed on a 640x480 canvas: one face about 90x120 px, as JPEG q90."""
    portrait = cv2.imread(str(ROOT / "tests" / "fixtures" / "astronaut.jpg"))
    canvas = np.full((480, 640, 3), 110, np.uint8)
    resized = cv2.resize(portrait, (480, 480), interpolation=cv2.INTER_AREA)
    canvas[:, 80:560] = resized
    ok, buffer = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buffer)


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:app", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env={**os.environ},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--url", default=None, help="an already running server (default: start one)")
    args = parser.parse_args()
    process, url = (None, args.url) if args.url else start_server()
    image = one_face_640x480()
    times, stages = [], []
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(args.requests + 10):
                start = time.perf_counter()
                response = client.post("/predict", files={"image": ("face.jpg", io.BytesIO(image), "image/jpeg")})
                elapsed = (time.perf_counter() - start) * 1000
                response.raise_for_status()
                body = response.json()
                if len(body["faces"]) != 1:
                    raise RuntimeError(f"expected one face, got {len(body['faces'])}")
                if i >= 10:  # the first requests warm caches and are not counted
                    times.append(elapsed)
                    stages.append(body["timings_ms"])
    finally:
        if process is not None:
            process.terminate()
            process.wait()
    times.sort()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    result = {
        "requests": len(times),
        "median_ms": round(statistics.median(times), 1),
        "p99_ms": round(times[max(0, int(0.99 * len(times)) - 1)], 1),
        "server_stage_median_ms": {k: round(statistics.median(s[k] for s in stages), 1) for k in stages[0]},
        "image": "640x480 JPEG, one face",
        "machine": f"{cpu}, {os.cpu_count()} cores",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
