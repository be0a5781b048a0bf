"""Where one request's CPU time goes: each pipeline stage, and the alternatives tried for it, per workload.

Usage: python benchmarks/stages.py [--runs 30] [--json benchmarks/stages.json]
(from the repository root with PYTHONPATH=. so that `benchmarks` imports)

Every figure is the median CPU time of the calling thread (time.thread_time) over the runs, in
milliseconds, with one OpenCV thread and one onnxruntime thread, so that it does not depend on other
work sharing the machine as much as wall time would; rows marked "wall ms" time several threads and
give the median wall time instead. This is the profile that the service's optimisations were chosen
from; docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.common import WORKLOADS, machine, report
from service.app import load_pipeline
from service.blazeface import INPUT_SIZE, BlazeFaceDetector
from service.classifier import GenderClassifier
from service.config import Settings
from service.detection import shrink
from service.detector import SsdFaceDetector
from service.images import decode_image
from service.pipeline import PredictOptions
from service.preprocess import preprocess_faces

LIMIT = 40_000_000


def median_ms(work: Callable[[], object], runs: int, clock: Callable[[], float] = time.thread_time) -> float:
    """Median milliseconds of ``work`` by ``clock`` (the calling thread's CPU time unless told) after 3 warm-ups."""
    for _ in range(3):
        work()
    times = []
    for _ in range(runs):
        start = clock()
        work()
        times.append((clock() - start) * 1000)
    return round(statistics.median(times), 2)


def pil_decode(data: bytes) -> object:
    # The service's PIL path, as it was before OpenCV took over plain JPEGs.
    import service.images

    fast = service.images._decode_jpeg_fast
    service.images._decode_jpeg_fast = lambda _: None
    try:
        return decode_image(data, LIMIT)
    finally:
        service.images._decode_jpeg_fast = fast


def forward(detector: SsdFaceDetector, blob: np.ndarray) -> object:
    # Straight to the network: what cross-request batching could save shows in one image against four.
    with detector._nets.borrow() as net:
        net.setInput(blob)
        return net.forward()


def blazeface_forward(detector: BlazeFaceDetector) -> object:
    # The graph's batch dimension is fixed at 1, so cross-request batching is not open to it.
    tensor = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    return detector._session.run(None, {detector._input: tensor})


def profile(workload: str, runs: int) -> dict[str, Any]:
    make, _ = WORKLOADS[workload]
    data = make()
    settings = Settings(ort_threads=1)
    pipeline = load_pipeline(settings)
    image = decode_image(data, LIMIT).bgr
    boxes = [d.box for d in pipeline.detect(image, None)]
    batch = preprocess_faces(image, boxes, pipeline.classifier.spec)
    buffer = np.frombuffer(data, np.uint8)
    ssd = SsdFaceDetector()
    one_view = BlazeFaceDetector(tile_size=0)
    two_threads = BlazeFaceDetector(tile_size=0, threads=2)
    one_pass = GenderClassifier(settings.model, threads=1, flip_average=False)
    flipping = GenderClassifier(settings.model, threads=1, flip_average=True)
    # The cost does not depend on the pixels, so a workload without faces times a grey crop instead.
    one_face = batch[:1] if len(batch) else np.full((1, *one_pass.spec.shape), 0.5, np.float32)
    blob = cv2.dnn.blobFromImages([shrink(image, 300, 300)] * 4, 1.0, (300, 300), (104.0, 177.0, 123.0))
    stages = {
        "decode, PIL": lambda: pil_decode(data),
        "decode, service (OpenCV for plain JPEG)": lambda: decode_image(data, LIMIT),
        "decode, OpenCV at half scale": lambda: cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_2),
        "resize to 300x300, one INTER_AREA step": lambda: cv2.resize(image, (300, 300), interpolation=cv2.INTER_AREA),
        "resize to 300x300, service (whole factor first)": lambda: shrink(image, 300, 300),
        "detect, res10 SSD 300 px": lambda: ssd.detect(image),
        "res10 network alone, one image": lambda: forward(ssd, blob[:1]),
        "res10 network alone, batch of 4 images": lambda: forward(ssd, blob),
        "blazeface network alone, one 256x256 view": lambda: blazeface_forward(one_view),
        "detect, blazeface one view (no tiles)": lambda: one_view.detect(image),
        "detect, service (blazeface, tiles of 640 px on images >= 960 px)": lambda: pipeline.detect(image, None),
        "crop + preprocess all faces": lambda: preprocess_faces(image, boxes, pipeline.classifier.spec),
        "classify all faces, one batch": lambda: pipeline.classifier.classify(batch),
        "classify all faces, one by one": lambda: [pipeline.classifier.classify(face[None]) for face in batch],
        "classify one face, one pass": lambda: one_pass.classify(one_face),
        "classify one face, flip-averaged (face and mirror image in one batch)": lambda: flipping.classify(one_face),
        "whole pipeline (predict_bytes)": lambda: pipeline.predict_bytes(data, PredictOptions()),
    }
    cpu = {name: median_ms(work, runs) for name, work in stages.items()}
    for threads, detector in ((1, one_view), (2, two_threads)):
        row = f"detect, blazeface one view, {threads} onnxruntime thread(s) (wall ms)"
        cpu[row] = median_ms(lambda d=detector: d.detect(image), runs, time.perf_counter)
    return {
        "workload": workload,
        "bytes": len(data),
        "size": [image.shape[1], image.shape[0]],
        "faces": len(boxes),
        "cpu_ms": cpu,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    names = list(results[0]["cpu_ms"])
    lines = ["| stage, CPU ms | " + " | ".join(r["workload"] for r in results) + " |"]
    lines.append("| --- |" + " --- |" * len(results))
    lines += [f"| {name} | " + " | ".join(f"{r['cpu_ms'][name]:.2f}" for r in results) + " |" for name in names]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    results = [profile(workload, args.runs) for workload in WORKLOADS]
    summary = f"{machine()}, 1 OpenCV thread, 1 onnxruntime thread, median thread CPU time of {args.runs} runs"
    report(markdown(results), summary, args.json, {"results": results})


if __name__ == "__main__":
    main()
