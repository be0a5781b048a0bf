"""Throughput and latency of a live facegender server under concurrent load.

Usage: python benchmarks/load.py [--concurrency 1 4 16] [--seconds 20] [--workers 1]
       [--env FACEGENDER_X=Y ...] [--url http://host:port] [--json benchmarks/load.json]
       [--plot benchmarks/load.png] [--p99-target-ms 500]
(from the repository root with PYTHONPATH=. so that `benchmarks` imports; the plot needs matplotlib)

Starts `uvicorn service.app:app` on a free loopback port (or drives --url), then for each workload of
benchmarks/common.py and each concurrency runs a closed loop: that many asyncio tasks share one httpx
client, each sending POST /predict again as soon as its answer arrives. The first seconds of every cell
warm up and are not counted. Reported per cell: requests/s, faces/s, p50/p95/p99 latency, errors, the
server's CPU use (100% = one core busy) and its peak RSS (all worker processes together), sampled from
/proc, and the mean of facegender_requests_in_flight read from /metrics every 0.5 s, as Prometheus sees it (the
scrape counts itself). The load generator runs on the same machine and its own CPU use is reported beside the
server's. With --p99-target-ms it also reports, per workload, the busiest cell whose p99 meets the target with
no errors: the in-flight count one replica can carry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    WORKLOADS,
    cpu_seconds,
    in_flight_gauge,
    machine,
    process_tree,
    report,
    rss_bytes,
    start_server,
)


@dataclass
class Tally:
    """What one cell of the run measured on the client side."""

    latencies_ms: list[float] = field(default_factory=list)
    faces: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    in_flight: list[float] = field(default_factory=list)


class ServerSampler:
    """Samples the server's RSS every 0.2 s in a thread; keeps the peak."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pids(self) -> list[int]:
        return process_tree(self.pid) if self.pid is not None else []

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_bytes(self.pids()))

    def __enter__(self) -> ServerSampler:
        self.peak = rss_bytes(self.pids())
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def drive(url: str, image: bytes, expected_faces: int, concurrency: int, seconds: float, warm_up: float) -> Tally:
    """Closed-loop load: ``concurrency`` tasks each send the image again as soon as the previous answer is in."""
    tally = Tally()
    counting_from = time.monotonic() + warm_up
    stop_at = counting_from + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            files = {"image": ("image.jpg", image, "image/jpeg")}
            try:
                response = await client.post("/predict", files=files)
                status = str(response.status_code)
                faces = len(response.json()["faces"]) if response.status_code == 200 else 0
            except httpx.HTTPError as exc:
                status, faces = type(exc).__name__, 0
            if start < counting_from:
                continue
            tally.latencies_ms.append((time.monotonic() - start) * 1000)
            tally.faces += faces
            if status != "200" or faces != expected_faces:
                key = status if status != "200" else f"200 with {faces} faces"
                tally.errors[key] = tally.errors.get(key, 0) + 1

    async def scraper() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            while time.monotonic() < stop_at:
                await asyncio.sleep(0.5)
                if time.monotonic() >= counting_from:
                    tally.in_flight.append(in_flight_gauge((await client.get("/metrics")).text))

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(scraper(), *(worker(client) for _ in range(concurrency)))
    return tally


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


def run_cell(
    url: str, pid: int | None, workload: str, concurrency: int, seconds: float, warm_up: float
) -> dict[str, Any]:
    make, expected_faces = WORKLOADS[workload]
    image = make()
    sampler = ServerSampler(pid)
    with sampler:
        server_cpu_before, client_cpu_before = cpu_seconds(sampler.pids()), time.process_time()
        wall_before = time.monotonic()
        tally = asyncio.run(drive(url, image, expected_faces, concurrency, seconds, warm_up))
        wall = time.monotonic() - wall_before
        server_cpu = cpu_seconds(sampler.pids()) - server_cpu_before
        client_cpu = time.process_time() - client_cpu_before
    latencies = sorted(tally.latencies_ms)
    counted = seconds  # the warm-up share of the wall time is excluded from rates
    return {
        "workload": workload,
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / counted, 1),
        "faces_per_s": round(tally.faces / counted, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "in_flight_mean": round(statistics.mean(tally.in_flight), 2) if tally.in_flight else None,
        # CPU over the whole cell, warm-up included, as the share of one core.
        "server_cpu_percent": round(100 * server_cpu / wall, 0) if pid is not None else None,
        "client_cpu_percent": round(100 * client_cpu / wall, 0),
        "server_peak_rss_mb": round(sampler.peak / 2**20, 1) if pid is not None else None,
        # Other work on the machine: the one-minute load average as the cell ends (this run adds about 2).
        "load_average": round(os.getloadavg()[0], 1),
    }


def markdown(cells: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | concurrency | requests/s | faces/s | p50 ms | p95 ms | p99 ms | errors | server CPU | "
        "client CPU | server peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        server_cpu = f"{c['server_cpu_percent']:.0f}%" if c["server_cpu_percent"] is not None else "n/a"
        lines.append(
            f"| {c['workload']} | {c['concurrency']} | {c['requests_per_s']:.1f} | {c['faces_per_s']:.1f} "
            f"| {c['p50_ms']:.0f} | {c['p95_ms']:.0f} | {c['p99_ms']:.0f} | {c['errors']} | {server_cpu} "
            f"| {c['client_cpu_percent']:.0f}% | {c['server_peak_rss_mb']} |"
        )
    return "\n".join(lines)


def capacity(cells: list[dict[str, Any]], p99_target_ms: float) -> list[dict[str, Any]]:
    """Per workload, the cell with the most clients whose p99 meets the target with no errors (None if none does),
    and whether a busier cell was measured that missed it (if not, the capacity may be higher than the sweep)."""
    found = []
    for workload in dict.fromkeys(c["workload"] for c in cells):
        rows = [c for c in cells if c["workload"] == workload]
        meeting = [c for c in rows if c["p99_ms"] <= p99_target_ms and not c["errors"]]
        best = max(meeting, key=lambda c: c["concurrency"], default=None)
        missed_above = best is not None and any(c["concurrency"] > best["concurrency"] for c in rows)
        found.append({"workload": workload, "p99_target_ms": p99_target_ms, "cell": best, "bounded": missed_above})
    return found


def capacity_markdown(found: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | p99 target ms | most clients meeting it | in flight, as scraped | requests/s | p99 ms "
        "| server CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    # "8+": the busiest cell measured still met the target.
    for item in found:
        c = item["cell"]
        if c is None:
            lines.append(f"| {item['workload']} | {item['p99_target_ms']:.0f} | none | | | | |")
            continue
        lines.append(
            f"| {item['workload']} | {item['p99_target_ms']:.0f} | {c['concurrency']}{'' if item['bounded'] else '+'} "
            f"| {c['in_flight_mean']} "
            f"| {c['requests_per_s']:.1f} | {c['p99_ms']:.0f} | {c['server_cpu_percent']}% |"
        )
    return "\n".join(lines)


def plot(cells: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(10, 4))
    for workload in WORKLOADS:
        rows = [c for c in cells if c["workload"] == workload]
        if not rows:
            continue
        x = [c["concurrency"] for c in rows]
        (line,) = latency.plot(x, [c["p50_ms"] for c in rows], marker="o", label=f"{workload}, p50")
        latency.plot(x, [c["p99_ms"] for c in rows], marker="^", linestyle="--", color=line.get_color(),
                     label=f"{workload}, p99")  # fmt: skip
        throughput.plot(x, [c["requests_per_s"] for c in rows], marker="o", color=line.get_color(), label=workload)
    for axes, label in ((latency, "latency, ms"), (throughput, "requests/s")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(sorted({c["concurrency"] for c in cells}))
        axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes.set_xlabel("concurrent clients")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    latency.legend(fontsize=7)
    throughput.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workload", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--seconds", type=float, default=20.0, help="counted seconds per cell, after warm-up")
    parser.add_argument("--warm-up", type=float, default=3.0, help="uncounted seconds at the start of each cell")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the started server")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE", help="environment of the server")
    parser.add_argument("--url", default=None, help="drive an already running server instead (no CPU/RSS)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--plot", type=Path, default=None, help="write a latency/throughput PNG here")
    parser.add_argument("--p99-target-ms", type=float, default=None,
                        help="also report, per workload, the most clients whose p99 meets this")  # fmt: skip
    args = parser.parse_args()

    env = dict(item.split("=", 1) for item in args.env)
    server = None if args.url else start_server(args.workers, env)
    url = args.url or server.url  # type: ignore[union-attr]
    pid = server.process.pid if server else None
    cells = []
    try:
        for workload in args.workload:
            for concurrency in args.concurrency:
                cells.append(run_cell(url, pid, workload, concurrency, args.seconds, args.warm_up))
                print(json.dumps(cells[-1]), flush=True)
    finally:
        if server:
            server.stop()
    layout = f"{args.workers} uvicorn worker(s)" + (f", {' '.join(args.env)}" if args.env else "")
    summary = f"{machine()}, load average {os.getloadavg()[0]:.1f} at the end; {layout}; {args.seconds:.0f} s per cell"
    table, results = markdown(cells), {"cells": cells}
    if args.p99_target_ms is not None:
        results["capacity"] = capacity(cells, args.p99_target_ms)
        table += "\n\n" + capacity_markdown(results["capacity"])
    report(table, summary, args.json, results)
    if args.plot:
        plot(cells, summary, args.plot)


if __name__ == "__main__":
    main()
