"""Coverage-guided fuzzing (atheris / libFuzzer) of the image intake: every input must decode or raise a domain error.

Seeds are the hostile corpus of tests/service/hostile.py plus small valid files of every supported format.
PIL's Python image plugins and service.images are instrumented, so libFuzzer steers mutations into new
branches of the header parsers. Any exception other than the service's own refusal is a crash; libFuzzer
then writes the input to <artifacts>/crash-<sha1> and exits non-zero. The statistics at the end (executions,
executions per second, new coverage units, peak RSS) are the figures.

Usage: python benchmarks/fuzz_decode.py [--seconds 300] [--quick] [--artifacts DIR]
(from the repository root with PYTHONPATH=.: the hostile corpus comes from tests/service/hostile.py)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["PIL", "service"]):
    from service.errors import ServiceError
    from service.images import decode_image

from tests.service.hostile import CORPUS, encode, noise

MAX_PIXELS = 4_000_000  # smaller than the service default, so each execution stays fast


def decode_one(data: bytes) -> None:
    with contextlib.suppress(ServiceError):
        decode_image(data, MAX_PIXELS)


def write_seeds(folder: Path) -> int:
    seeds = [data for data, _ in CORPUS.values()]
    seeds += [
        encode(noise(24, 16, mode), fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF") for mode in ("RGB", "L")
    ]
    for i, data in enumerate(seeds):
        (folder / f"seed-{i:03d}").write_bytes(data)
    return len(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300, help="how long libFuzzer runs")
    parser.add_argument("--quick", action="store_true", help="CI size: 15 seconds")
    parser.add_argument("--artifacts", type=Path, default=Path(), help="where libFuzzer writes crashing inputs")
    args = parser.parse_args()
    seconds = 15 if args.quick else args.seconds
    warnings.simplefilter("ignore")  # PIL warns about most mutated headers; only exceptions count here
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work)
        seeds = write_seeds(corpus)
        print(f"{seeds} seed files", flush=True)
        atheris.Setup(
            [sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-rss_limit_mb=2048", "-timeout=10",
             "-max_len=65536", "-print_final_stats=1", f"-artifact_prefix={args.artifacts}/"],
            decode_one,
        )  # fmt: skip
        atheris.Fuzz()  # libFuzzer ends the process: 0 after the time is up, non-zero on a crash


if __name__ == "__main__":
    main()
