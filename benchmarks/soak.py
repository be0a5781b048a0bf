"""Soak test on loopback: mixed valid and hostile traffic, then SIGTERM with requests in flight, then a restart.

Starts `uvicorn service.app:app` on a free port, warms it up, and records the server's resident memory and
open file descriptors from /proc while CONCURRENCY clients send a fixed mix of valid photos and hostile
uploads (the test corpus of tests/service/hostile.py, oversized bodies, bad parameters). Then it starts a
batch of slow requests, sends SIGTERM while they are in flight, checks that every one completes, and times
how long a restarted server takes to answer /readyz. Prints and writes a JSON result.

Usage: python benchmarks/soak.py [--duration 300] [--warmup 30] [--quick] [--out benchmarks/soak.json]
(from the repository root with PYTHONPATH=.: the hostile corpus comes from tests/service/hostile.py)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import PHOTOS, drain_on_stop, machine_now, print_and_write, rss_bytes, start_server
from tests.service.hostile import CORPUS

CONCURRENCY = 16
MAX_BYTES = 1_000_000  # a small upload limit keeps the oversized bodies cheap to send


def photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: its share, the httpx.request arguments, and the right answer."""

    name: str
    weight: float
    request: dict[str, Any]
    status: int
    faces: int | None = None  # for /predict answers: the number of faces the photo has


def requests_mix() -> list[Kind]:
    """The traffic: real photos whose face count is known, and hostile requests (about a third)."""
    face, no_face = photo("astronaut.jpg"), photo("coffee.jpg")
    upload = {"image": ("a.jpg", face, "image/jpeg")}
    mix = [
        Kind("predict", 40, {"method": "POST", "url": "/predict", "files": upload}, 200, faces=1),
        Kind("predict_raw", 8, {"method": "POST", "url": "/predict", "content": no_face,
                                "headers": {"content-type": "image/jpeg"}}, 200, faces=0),
        Kind("annotate", 5, {"method": "POST", "url": "/annotate", "files": upload}, 200),
        Kind("batch", 4, {"method": "POST", "url": "/predict/batch",
                          "files": [("images", (f"{i}.jpg", face, "image/jpeg")) for i in range(3)]}, 200),
        Kind("oversized", 2, {"method": "POST", "url": "/predict", "content": b"\0" * (MAX_BYTES + 1),
                              "headers": {"content-type": "image/jpeg"}}, 413),
        Kind("bad_parameter", 3, {"method": "POST", "url": "/predict", "params": {"max_faces": "-1"}, "files": upload},
             422),
        Kind("missing_field", 3, {"method": "POST", "url": "/predict", "files": {"photo": upload["image"]}}, 422),
        Kind("unknown_path", 2, {"method": "GET", "url": "/admin"}, 404),
        Kind("ready", 3, {"method": "GET", "url": "/readyz"}, 200),
        Kind("metrics", 1, {"method": "GET", "url": "/metrics"}, 200),
    ]  # fmt: skip
    hostile = {name: value for name, value in CORPUS.items() if value[1] != 200}
    for name, (data, status) in hostile.items():
        files = {"image": ("photo.jpg", data, "image/jpeg")}
        mix.append(Kind(f"hostile: {name}", 30 / len(hostile), {"method": "POST", "url": "/predict", "files": files},
                        status))  # fmt: skip
    return mix


def wrong_answer(kind: Kind, response: httpx.Response) -> str | None:
    """Why the response is not the right answer to this kind of request, or None."""
    if response.status_code != kind.status:
        return str(response.status_code)
    if kind.faces is not None and len(response.json()["faces"]) != kind.faces:
        return f"{len(response.json()['faces'])} faces"
    return None


def timed_start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, float]:
    """A uvicorn serving the app, and the seconds from launch until /readyz answered 200."""
    started = time.monotonic()
    server = start_server(env=env)
    return server.process, server.url, time.monotonic() - started


def footprint(pid: int) -> dict[str, int]:
    """Resident memory (KiB) and open file descriptors of a process, from /proc."""
    return {"rss_kib": rss_bytes([pid]) // 1024, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def traffic(url: str, seconds: float, seed: int, pid: int) -> dict[str, Any]:
    """CONCURRENCY clients sending the mix for ``seconds``; counts by kind and status, latencies, footprints."""
    mix = requests_mix()
    rng = random.Random(seed)
    statuses: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    latencies: list[float] = []
    samples: list[dict[str, int]] = []
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            kind = rng.choices(mix, [k.weight for k in mix])[0]
            started = time.perf_counter()
            try:
                response = await client.request(**kind.request)
            except httpx.TransportError as exc:
                statuses["transport_error"] += 1
                unexpected[f"{kind.name}: {type(exc).__name__}"] += 1
                continue
            statuses[f"{response.status_code // 100}xx"] += 1
            problem = wrong_answer(kind, response)
            if problem:
                unexpected[f"{kind.name}: {problem}"] += 1
            elif kind.name == "predict":
                latencies.append((time.perf_counter() - started) * 1000)

    async def sampler() -> None:
        while True:
            samples.append(footprint(pid))
            await asyncio.sleep(1.0)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(client_loop(client) for _ in range(CONCURRENCY)))
        sampling.cancel()
    latencies.sort()
    return {
        "requests": sum(statuses.values()),
        "by_status": dict(sorted(statuses.items())),
        "unexpected": dict(unexpected),
        "predict_ms": {"median": round(statistics.median(latencies), 1),
                       "p99": round(latencies[max(0, int(0.99 * len(latencies)) - 1)], 1)} if latencies else {},
        "peak_rss_kib": max(s["rss_kib"] for s in samples),
        "peak_fds": max(s["fds"] for s in samples),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of measured traffic")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of traffic before the baseline")
    parser.add_argument("--quick", action="store_true", help="CI size: 10 s of traffic after 10 s of warm-up")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 10.0, 10.0
    env = {"FACEGENDER_MAX_BYTES": str(MAX_BYTES), "FACEGENDER_LOG_LEVEL": "WARNING"}
    process, url, first_start = timed_start(env)
    try:
        warmup = asyncio.run(traffic(url, args.warmup, seed=1, pid=process.pid))
        time.sleep(1.0)  # let closed connections go before the baseline
        baseline = footprint(process.pid)
        soak = asyncio.run(traffic(url, args.duration, seed=2, pid=process.pid))
        time.sleep(1.0)
        after = footprint(process.pid)

        def sigterm() -> int:
            process.send_signal(signal.SIGTERM)
            return process.wait(60)

        shutdown = asyncio.run(drain_on_stop(url, CONCURRENCY, sigterm))
    finally:
        if process.poll() is None:
            process.kill()
    restarted, _, restart_seconds = timed_start(env)
    restarted.terminate()
    restarted.wait(60)
    result = {
        "concurrency": CONCURRENCY,
        "warmup_seconds": args.warmup,
        "duration_seconds": args.duration,
        "warmup_requests": warmup["requests"],
        "soak": soak,
        "rss_kib": {"baseline": baseline["rss_kib"], "after": after["rss_kib"], "peak": soak["peak_rss_kib"]},
        "rss_growth_percent": round(100 * (after["rss_kib"] - baseline["rss_kib"]) / baseline["rss_kib"], 2),
        "fds": {"baseline": baseline["fds"], "after": after["fds"], "peak": soak["peak_fds"]},
        "shutdown": shutdown,
        "first_start_ready_seconds": round(first_start, 2),
        "restart_ready_seconds": round(restart_seconds, 2),
        "machine": machine_now(),
    }
    print_and_write(result, args.out, indent=2)


if __name__ == "__main__":
    main()
