"""Milliseconds per face of an ONNX gender model in onnxruntime: batch 1, one thread.

Usage: python benchmarks/model_latency.py [models/gender.onnx] [--runs 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "gender.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    face = np.random.default_rng(0).random((1, *inp.shape[1:]), dtype=np.float32)
    for _ in range(50):
        session.run(None, {inp.name: face})
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        session.run(None, {inp.name: face})
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    result = {
        "model": args.model.name,
        "size_kib": round(args.model.stat().st_size / 1024, 1),
        "runs": args.runs,
        "median_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[int(0.99 * len(times)) - 1], 3),
        "machine": f"{platform.processor() or platform.machine()}, {ort.__version__} onnxruntime, 1 thread",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
