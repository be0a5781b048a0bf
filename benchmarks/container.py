"""The facegender image under a real Docker engine: its size, memory under load, shutdown and restart.

Usage: python benchmarks/container.py [--seconds 15] [--json benchmarks/container.json]
(from the repository root with PYTHONPATH=.; needs a Docker engine with Compose v2: deploy/local-engine.sh)

Builds the image and brings docker-compose.yml up with deploy/host-network/compose.yml (the service on the
host's port 8000, Prometheus on 9090, no Grafana), then measures, on the service's container:
- build time without the build cache (the base image present), image size, start until Docker reports it
  healthy;
- benchmarks/load.py's five-face 1920x1080 workload at 16 clients: latency, errors, CPU, the process's peak
  RSS and the container's peak memory (its cgroup's, page cache included) against the compose file's limit;
- `docker compose stop` with 16 requests in flight: how many complete, the exit status, how long it takes,
  against the compose file's stop_grace_period;
- SIGKILL of the process: the restart policy brings the container back; seconds until /readyz answers 200.
The stack is taken down (volumes included) at the end. The tests in tests/deploy use the same functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import ROOT, drain_on_stop, machine_now, print_and_write, rss_bytes
from benchmarks.load import run_cell

COMPOSE_FILE = ROOT / "docker-compose.yml"
HOST_NETWORK_OVERRIDE = ROOT / "deploy" / "host-network" / "compose.yml"
SERVICE_URL = "http://127.0.0.1:8000"
PROMETHEUS_URL = "http://127.0.0.1:9090"
LOAD_WORKLOAD = "five faces 1920x1080"
LOAD_CLIENTS = 16
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


class DockerError(RuntimeError):
    """A docker command failed; the message holds its stderr."""


def docker_result(*args: str, timeout: float = 600, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI, whatever its exit status."""
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


def docker(*args: str, timeout: float = 600, check: bool = True, stdin: str | None = None) -> str:
    """Run the docker CLI; its stdout, or DockerError with the command and its stderr."""
    result = docker_result(*args, timeout=timeout, stdin=stdin)
    if check and result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def engine_problem() -> str | None:
    """Why containers cannot run here (no CLI, no engine, no Compose v2), or None when they can."""
    try:
        docker("info", timeout=30)
    except FileNotFoundError:
        return "no docker CLI on PATH"
    except (DockerError, subprocess.TimeoutExpired) as exc:
        return f"no Docker engine answers `docker info` ({str(exc).splitlines()[-1]})"
    try:
        docker("compose", "version", timeout=30)
    except DockerError:
        return "no Compose v2 (`docker compose`)"
    return None


def compose_services() -> dict[str, Any]:
    """The services of docker-compose.yml, as written (not interpolated)."""
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def parse_bytes(value: str | int) -> int:
    """A Compose byte value ("2g", "512m", 1024) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?b?)", str(value).strip().lower())
    if not match:
        raise ValueError(f"not a byte value: {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def parse_duration(value: str) -> float:
    """A Compose duration ("30s", "1m30s") in seconds."""
    if not re.fullmatch(r"(\d+(\.\d+)?(ms|s|m|h))+", value.strip()):
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(number) * _SECONDS[unit] for number, unit in _DURATION.findall(value))


def memory_limit() -> int:
    """The service's memory limit in docker-compose.yml, in bytes."""
    return parse_bytes(compose_services()["facegender"]["deploy"]["resources"]["limits"]["memory"])


def grace_period() -> float:
    """The service's stop_grace_period in docker-compose.yml (Compose's default is 10 s), in seconds."""
    return parse_duration(compose_services()["facegender"].get("stop_grace_period", "10s"))


def inspect(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(docker("inspect", name))[0]
    return found


def health(container: str) -> str:
    return str(inspect(container)["State"].get("Health", {}).get("Status", "none"))


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).strip())


def _cgroup_dir(pid: int) -> tuple[Path, str]:
    """The memory cgroup directory of a host process and the file holding its peak usage (cgroup v1 or v2)."""
    unified = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/"), "memory.max_usage_in_bytes"
        if controllers == "":
            unified = Path("/sys/fs/cgroup") / path.lstrip("/")
    if unified is None:
        raise RuntimeError(f"process {pid} is in no memory cgroup")
    return unified, "memory.peak"


def peak_memory(pid: int) -> int:
    """Peak memory of the cgroup (the container) a host process runs in: RSS and page cache, as the limit counts."""
    directory, name = _cgroup_dir(pid)
    return int((directory / name).read_text())


def reset_peak_memory(pid: int) -> None:
    """Start the cgroup's peak from its current usage (cgroup v1 only; v2 keeps the peak since start)."""
    directory, name = _cgroup_dir(pid)
    if name == "memory.max_usage_in_bytes":
        (directory / name).write_text("0")


def peak_rss(pid: int) -> int:
    """The process's own peak resident set (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024  # type: ignore[union-attr]


def wait_for(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.3) -> float:
    """Poll until ``ready()``; the seconds it took, or TimeoutError."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if ready():
                return time.monotonic() - started
        except (httpx.TransportError, DockerError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout:.0f} s")


def answers_ready(url: str = SERVICE_URL) -> bool:
    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200


@dataclass(frozen=True)
class Stack:
    """docker-compose.yml with the host-network override, as one Compose project."""

    project: str = "facegender-bench"

    def compose(self, *args: str, timeout: float = 900) -> str:
        files = ("--file", str(COMPOSE_FILE), "--file", str(HOST_NETWORK_OVERRIDE))
        return docker("compose", "--project-name", self.project, "--project-directory", str(ROOT), *files, *args,
                      timeout=timeout)  # fmt: skip

    def container(self, service: str = "facegender") -> str:
        ids = self.compose("ps", "--all", "--quiet", service).split()
        if len(ids) != 1:
            raise DockerError(f"{service}: expected one container, found {ids}")
        return ids[0]

    def pid(self, service: str = "facegender") -> int:
        return int(inspect(self.container(service))["State"]["Pid"])

    def build(self, cached: bool = True) -> float:
        """`docker compose build facegender`; the seconds it took (``cached=False``: every step run again)."""
        started = time.monotonic()
        self.compose("build", *(() if cached else ("--no-cache",)), "facegender")
        return time.monotonic() - started

    def up(self, timeout: float = 180) -> float:
        """`up --build` (a no-op build after build()); the seconds until every service reports healthy."""
        started = time.monotonic()
        self.compose("up", "--detach", "--build", "--wait", "--wait-timeout", str(int(timeout)), timeout=timeout + 600)
        return time.monotonic() - started

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30")

    def stop_with_requests_in_flight(self, clients: int = LOAD_CLIENTS) -> dict[str, Any]:
        """`docker compose stop facegender` (SIGTERM, then SIGKILL after the grace period) during ``clients``
        slow requests."""
        container = self.container()

        def stop() -> int:
            self.compose("stop", "facegender")
            return int(inspect(container)["State"]["ExitCode"])

        result = asyncio.run(drain_on_stop(SERVICE_URL, clients, stop))
        return {
            **result,
            "grace_period_seconds": grace_period(),
            "oom_killed": inspect(container)["State"]["OOMKilled"],
        }

    def crash_and_recover(self, timeout: float = 120) -> dict[str, Any]:
        """SIGKILL the service's process, as a crash would; Docker's restart policy must bring it back."""
        container = self.container()
        before = int(inspect(container)["RestartCount"])
        started = time.monotonic()
        os.kill(self.pid(), signal.SIGKILL)
        wait_for("a restart", lambda: int(inspect(container)["RestartCount"]) > before, timeout)
        wait_for("/readyz 200 after the restart", answers_ready, timeout)
        ready = time.monotonic() - started
        wait_for("healthy after the restart", lambda: health(container) == "healthy", timeout)
        return {
            "restart_policy": inspect(container)["HostConfig"]["RestartPolicy"]["Name"],
            "restarts": int(inspect(container)["RestartCount"]) - before,
            "ready_seconds_after_kill": round(ready, 2),
            "healthy_seconds_after_kill": round(time.monotonic() - started, 2),
        }


def load_in_container(stack: Stack, seconds: float, warm_up: float) -> dict[str, Any]:
    """benchmarks/load.py's cell against the container, with its process's RSS and its cgroup's peak memory."""
    pid = stack.pid()
    reset_peak_memory(pid)
    cell = run_cell(SERVICE_URL, pid, LOAD_WORKLOAD, LOAD_CLIENTS, seconds, warm_up)
    limit = memory_limit()
    configured = int(inspect(stack.container())["HostConfig"]["Memory"])
    return {
        **cell,
        "container_peak_memory_mib": round(peak_memory(pid) / 2**20, 1),
        "process_peak_rss_mib": round(peak_rss(pid) / 2**20, 1),
        "compose_memory_limit_mib": round(limit / 2**20, 1),
        "engine_memory_limit_mib": round(configured / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="counted seconds of the load cell")
    parser.add_argument("--warm-up", type=float, default=3.0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    stack = Stack()
    results: dict[str, Any] = {}
    try:
        results["build_seconds_without_cache"] = round(stack.build(cached=False), 1)
        results["image_mb"] = round(image_size("facegender:local") / 1e6, 1)
        results["up_until_healthy_seconds"] = round(stack.up(), 1)
        results["idle_rss_mib"] = round(rss_bytes([stack.pid()]) / 2**20, 1)
        results["load"] = load_in_container(stack, args.seconds, args.warm_up)
        results["stop_with_requests_in_flight"] = stack.stop_with_requests_in_flight()
        stack.compose("start", "facegender")
        wait_for("/readyz 200 after start", answers_ready, 120)
        results["crash"] = stack.crash_and_recover()
    finally:
        stack.down()
    results["machine"] = machine_now()
    results["engine"] = docker("version", "--format", "{{.Server.Version}}").strip()
    print_and_write(results, args.json)


if __name__ == "__main__":
    main()
