"""Detectors and crops end to end on labelled photo sets with real context: found, right, calibrated.

Usage: python benchmarks/photosets.py [--shared ../shared/datasets] [--json benchmarks/photosets.json]
(from the repository root with PYTHONPATH=.; needs the shared archives and the `train` extra's loaders)

For each detector setting and each set, every whole photo goes through the detector; the labelled face
is the detection matching the labelled box (IoU >= 0.3 or its centre inside it) where the set has boxes
(celeba_wild), else the most confident detection (pixabay_portraits: one person per portrait). The
bundled classifier then scores the face cropped as its metadata says, and cropped with eye alignment
where the detector gives eyes, flip-averaged when its metadata says so, as the service does. A photo
whose face is not found counts as an error in balanced accuracy; ECE is over the found faces. The
matching, crops and figures are training/external.py's, as in `python -m training evaluate MODEL
--external SPEC`.
The geometry section fits how BlazeFace's square boxes and eyes sit against res10's boxes on the same
faces: the constants in service/blazeface.py and service/preprocess.py come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.common import HERE, ROOT, machine
from service import blazeface
from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL
from service.detection import Detection, FaceDetector, iou
from service.detector import create_detector
from training.datasets import Sample, extract_archive, load_extracted
from training.external import MATCH_IOU, classify_photos, expected_calibration_error, photo_figures

SETS = ("celeba_wild", "pixabay_portraits")


@dataclass(frozen=True)
class Setting:
    label: str
    backend: str
    threshold: float | None = None


SETTINGS = (
    Setting("ssd (res10), thr 0.5", "ssd"),
    Setting("blazeface, thr 0.5", "blazeface", 0.5),
    Setting("blazeface, thr 0.6", "blazeface", 0.6),
    Setting("blazeface, thr 0.7", "blazeface", 0.7),
    Setting("haar", "haar"),
)


PLAIN, ALIGNED = "crop as the model's metadata says", "aligned by the eyes"


# ECE bins over 0..1: ten over the top-label confidence's range 0.5..1, as this benchmark has always used.
ECE_BINS = 20


def score(samples: list[Sample], probs: npt.NDArray[np.float64]) -> dict[str, Any]:
    """training.external's figures of one set as this benchmark reports them; ECE on found faces."""
    figures = photo_figures(samples, probs)
    found = ~np.isnan(probs[:, 0])
    y = np.array([s.label for s in samples], dtype=np.int64)
    return {
        "photos": figures["images"],
        "detected": round(figures["detection_rate"], 4),
        "balanced_accuracy": round(figures["balanced_accuracy"], 4),
        "recall_female": round(figures["recall"]["female"], 4),
        "recall_male": round(figures["recall"]["male"], 4),
        "ece": round(expected_calibration_error(probs[found], y[found], ECE_BINS), 4),
    }


def run_setting(
    setting: Setting, detector: FaceDetector, classifier: GenderClassifier, data: dict[str, list[Sample]]
) -> tuple[dict[str, Any], dict[str, list[Detection | None]]]:
    session, feed, output = classifier.session, classifier.input_name, classifier.output_name
    crops = {PLAIN: classifier.spec, ALIGNED: replace(classifier.spec, align=True)}
    results: dict[str, Any] = {}
    picked: dict[str, list[Detection | None]] = {}
    for name, samples in data.items():
        faces, probs = classify_photos(
            samples,
            lambda x: session.run([output], {feed: x})[0],
            crops,
            detector,
            flip=classifier.flip_average,
            temperature=classifier.temperature,
            labels=classifier.labels,
            threshold=setting.threshold,
        )
        with_eyes = all(face is None or face.eyes is not None for face in faces)
        results[name] = {crop: score(samples, p) for crop, p in probs.items() if with_eyes or crop == PLAIN}
        picked[name] = faces
    return results, picked


def geometry(ssd: list[Detection | None], blaze: list[Detection | None]) -> dict[str, float]:
    """Medians of how res10's box and the eyes sit against BlazeFace's raw square box, on faces both found."""
    width, height, shift, eye_distance, eye_height = [], [], [], [], []
    for a, b in zip(ssd, blaze, strict=True):
        if a is None or b is None or iou(a.box, b.box) < MATCH_IOU or b.eyes is None:
            continue
        # Undo the box mapping currently applied, to fit against the network's own box.
        raw_w, raw_h = b.box.width / blazeface.BOX_SCALE_X, b.box.height / blazeface.BOX_SCALE_Y
        raw_cy = b.box.y + b.box.height / 2 - blazeface.BOX_SHIFT_Y * raw_h
        width.append(a.box.width / raw_w)
        height.append(a.box.height / raw_h)
        shift.append((a.box.y + a.box.height / 2 - raw_cy) / raw_h)
        (lx, ly), (rx, ry) = b.eyes
        side = max(a.box.width, a.box.height)
        eye_distance.append(float(np.hypot(rx - lx, ry - ly)) / side)
        eye_height.append((a.box.y + a.box.height / 2 - (ly + ry) / 2) / side)
    return {
        "faces": len(width),
        "res10 width / blazeface width": round(statistics.median(width), 3),
        "res10 height / blazeface height": round(statistics.median(height), 3),
        "res10 centre below blazeface centre, in blazeface heights": round(statistics.median(shift), 3),
        "eye distance / res10 box side": round(statistics.median(eye_distance), 3),
        "eyes above res10 box centre / res10 box side": round(statistics.median(eye_height), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache")
    parser.add_argument("--json", type=Path, default=HERE / "photosets.json")
    parser.add_argument("--limit", type=int, default=0, help="about N photos of each set, evenly spread (0: all)")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    data = {}
    for name in SETS:
        samples = load_extracted(extract_archive(args.shared / f"{name}.tar.gz", args.cache))
        data[name] = samples[:: max(1, len(samples) // args.limit)] if args.limit else samples
    classifier = GenderClassifier(BUNDLED_MODEL)
    report: dict[str, Any] = {
        "machine": f"{machine()}, load average {os.getloadavg()[0]:.1f}",
        "model": classifier.metadata["version"],
        "flip_average": classifier.flip_average,
        "results": {},
    }
    picked = {}
    for setting in SETTINGS:
        results, picked[setting.label] = run_setting(setting, create_detector(setting.backend), classifier, data)  # type: ignore[arg-type]
        report["results"][setting.label] = results
    report["geometry"] = {
        name: geometry(picked[SETTINGS[0].label][name], picked[SETTINGS[1].label][name]) for name in SETS
    }
    lines = ["| detector | crop | " + " | ".join(f"{n}: found, balanced acc., F / M recall, ECE" for n in SETS) + " |"]
    lines.append("| --- | --- |" + " --- |" * len(SETS))
    for label, results in report["results"].items():
        for crop in results[SETS[0]]:
            cells = []
            for name in SETS:
                r = results[name][crop]
                cells.append(
                    f"{r['detected']:.1%}, {r['balanced_accuracy']:.1%}, "
                    f"{r['recall_female']:.1%} / {r['recall_male']:.1%}, {r['ece']:.1%}"
                )
            lines.append(f"| {label} | {crop} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print(json.dumps(report["geometry"], indent=1))
    print(report["machine"])
    args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
