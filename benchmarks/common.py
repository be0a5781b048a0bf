"""What the benchmarks share: the workload images, a live uvicorn server, process accounting from /proc, and
shutting a server down with requests in flight."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHOTOS = HERE / "photos"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, OpenCV {cv2.__version__}"


def to_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buffer)


def one_face_640x480() -> bytes:
    """The astronaut portrait placed on a 640x480 canvas: one face about 90x120 px, as JPEG q90."""
    portrait = cv2.imread(str(PHOTOS / "astronaut.jpg"))
    canvas = np.full((480, 640, 3), 110, np.uint8)
    canvas[:, 80:560] = cv2.resize(portrait, (480, 480), interpolation=cv2.INTER_AREA)
    return to_jpeg(canvas)


@dataclass(frozen=True)
class ServerProcess:
    """A uvicorn process tree serving the app on loopback."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(workers: int = 1, env: dict[str, str] | None = None, timeout: float = 120) -> ServerProcess:
    """Start ``uvicorn service.app:app`` on a free port and wait for /readyz."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "service.app:app", "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            # Every worker must be ready; with several workers a few probes reach different ones.
            if all(httpx.get(f"{url}/readyz", timeout=2).status_code == 200 for _ in range(4 * workers)):
                return ServerProcess(process, url)
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("the server did not become ready")


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (uvicorn's worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of the processes."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of the processes together."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
        except OSError:
            continue
    return total


def five_faces_1920x1080() -> bytes:
    """Five pasted faces, 150-260 px wide, on the rocket photo scaled to 1920x1080, as JPEG q90."""
    from benchmarks.detectors import FACE_SOURCES, Composite, load, make_composite

    photos = {name: load(f"{name}.jpg") for name in (*FACE_SOURCES, "rocket")}
    image, faces, _ = make_composite(Composite("rocket", (1920, 1080), 5, (150, 260)), photos, np.random.default_rng(5))
    if len(faces) != 5:
        raise RuntimeError(f"the composite holds {len(faces)} faces, not 5")
    return to_jpeg(image)


def no_face_photo() -> bytes:
    """The coffee-cup photo, 600x400, no face."""
    return (PHOTOS / "coffee.jpg").read_bytes()


WORKLOADS = {
    "one face 640x480": (one_face_640x480, 1),
    "five faces 1920x1080": (five_faces_1920x1080, 5),
    "no face 600x400": (no_face_photo, 0),
}


def machine_now() -> str:
    """The machine line with the load average now: other work on the machine shows in every figure."""
    return f"{machine()}, load average {os.getloadavg()[0]:.1f}"


def print_and_write(result: dict[str, Any], path: Path | None, indent: int = 1) -> None:
    """Print a result as JSON, and write it to ``path`` when one is given."""
    text = json.dumps(result, indent=indent)
    print(text)
    if path is not None:
        path.write_text(text + "\n")


def report(table: str, summary: str, path: Path | None, results: dict[str, object]) -> None:
    """Print the markdown table and the machine line; write them with the results as JSON when asked."""
    print(table)
    print(summary)
    if path is not None:
        path.write_text(json.dumps({"machine": summary, **results}, indent=1) + "\n")


def in_flight_gauge(metrics: str) -> float:
    """facegender_requests_in_flight from a /metrics page; the request that fetched the page counts itself."""
    line = next(line for line in metrics.splitlines() if line.startswith("facegender_requests_in_flight "))
    return float(line.split()[1])


async def drain_on_stop(url: str, clients: int, stop: Callable[[], int | None]) -> dict[str, Any]:
    """Start ``clients`` slow batch requests and, once the server reports them in flight, call ``stop`` (which
    sends SIGTERM and returns the exit status when the server is gone); collect the answers."""
    face = (PHOTOS / "astronaut.jpg").read_bytes()
    files = [("images", (f"{i}.jpg", face, "image/jpeg")) for i in range(2)]
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        tasks = [asyncio.create_task(client.post("/predict/batch", files=files)) for _ in range(clients)]
        in_flight, waited = 0.0, time.monotonic()
        # Until the server reports them all in flight, for at most 10 s.
        while in_flight < clients and time.monotonic() - waited < 10:
            in_flight = in_flight_gauge((await client.get("/metrics")).text) - 1
        sent = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(stop))
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        code = await stopping
        exit_seconds = time.monotonic() - sent
    complete = [a for a in answers if isinstance(a, httpx.Response) and a.status_code == 200
                and all("faces" in r for r in a.json()["results"])]  # fmt: skip
    return {
        "requests": clients,
        "in_flight_at_sigterm": int(in_flight),
        "completed_200": len(complete),
        "exit_code": code,
        "exit_seconds_after_sigterm": round(exit_seconds, 2),
    }
