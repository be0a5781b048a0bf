"""What the Dockerfile's trimming step saves, and what keeping the venv's bytecode buys at start.

Usage: python benchmarks/image.py [--starts 3] [--json benchmarks/image.json]
(from the repository root with PYTHONPATH=.; needs a Docker engine, see deploy/local-engine.sh, and the host's
port 8000 free)

Builds three variants of the Dockerfile with `docker build` (the file is changed in memory only):
- as shipped;
- untrimmed: without the step that removes pip, setuptools and the packages' test suites from the venv;
- no bytecode: that step also removes the venv's __pycache__ folders.
For each: the image's size, the venv's size, and the seconds from `docker run` (read-only root filesystem and
a tmpfs /tmp, as docker-compose.yml runs it) until /readyz answers 200, the median of --starts runs. It also
lists the largest packages in the shipped venv.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, machine_now
from benchmarks.container import answers_ready, docker, image_size, wait_for

DOCKERFILE = ROOT / "Dockerfile"
TRIM_MARK = "pip uninstall"
NO_BYTECODE = " \\\n    && find /opt/venv -type d -name __pycache__ -prune -exec rm -rf {} +"
SITE_PACKAGES = "/opt/venv/lib/python3*/site-packages"


def trim_step(text: str) -> re.Match[str]:
    """The RUN instruction, continuation lines included, that trims the venv."""
    match = re.search(r"^RUN [^\n]*" + re.escape(TRIM_MARK) + r"(?:[^\n]*\\\n)*[^\n]*$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no RUN step with {TRIM_MARK!r} in the Dockerfile")
    return match


def variants() -> dict[str, str]:
    shipped = DOCKERFILE.read_text()
    step = trim_step(shipped)
    return {
        "as shipped": shipped,
        "untrimmed": shipped[: step.start()] + shipped[step.end() :],
        "no bytecode": shipped[: step.end()] + NO_BYTECODE + shipped[step.end() :],
    }


def start_seconds(image: str) -> float:
    """From `docker run` until /readyz answers 200, as compose runs the container."""
    started = time.monotonic()
    container = docker("run", "--detach", "--network", "host", "--read-only", "--tmpfs", "/tmp", image).strip()
    try:
        wait_for("/readyz 200", answers_ready, 120, interval=0.05)
        return time.monotonic() - started
    finally:
        docker("rm", "--force", container)


def venv_bytes(image: str) -> int:
    return int(docker("run", "--rm", "--network", "none", "--entrypoint", "du", image, "-sb", "/opt/venv").split()[0])


def largest_packages(image: str, count: int = 8) -> list[dict[str, Any]]:
    script = f"du -sm {SITE_PACKAGES}/* | sort -rn | head -n {count}"
    output = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script)
    return [
        {"mib": int(size), "path": Path(path).name} for size, path in (line.split() for line in output.splitlines())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="container starts timed per variant")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    rows = []
    for name, dockerfile in variants().items():
        image = f"facegender:image-{name.replace(' ', '-')}"
        started = time.monotonic()
        docker("build", "--quiet", "--network", "host", "--file", "-", "--tag", image, str(ROOT), stdin=dockerfile)
        build = time.monotonic() - started
        starts = [start_seconds(image) for _ in range(args.starts)]
        rows.append({
            "variant": name,
            "image_mb": round(image_size(image) / 1e6, 1),
            "venv_mb": round(venv_bytes(image) / 1e6, 1),
            "start_to_ready_s": round(statistics.median(starts), 2),
            "starts_s": [round(s, 2) for s in starts],
            "build_s": round(build, 1),
            "largest_packages": largest_packages(image) if name == "as shipped" else None,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    base = docker("image", "inspect", "--format", "{{.Size}}", DOCKERFILE.read_text().split("FROM ")[1].split()[0])
    result = {
        "variants": rows,
        "base_image_mb": round(int(base) / 1e6, 1),
        "machine": machine_now(),
        "engine": docker("version", "--format", "{{.Server.Version}}").strip(),
    }
    print("| variant | image MB | venv MB | docker run to /readyz 200, s |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['variant']} | {row['image_mb']} | {row['venv_mb']} | {row['start_to_ready_s']} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
