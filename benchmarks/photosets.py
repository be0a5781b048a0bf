"""Detectors and crops end to end on labelled photo sets with real context: found, right, calibrated.

Usage: python benchmarks/photosets.py [--shared ../shared/datasets] [--json benchmarks/photosets.json]
(from the repository root with PYTHONPATH=.; needs the shared archives and the `train` extra's loaders)

For each detector setting and each set, every whole photo goes through the detector; the labelled face
is the detection matching the labelled box (IoU >= 0.3 or its centre inside it) where the set has boxes
(celeba_wild), else the most confident detection (pixabay_portraits: one person per portrait). The
bundled classifier then scores the face cropped as its metadata says, and cropped with eye alignment
where the detector gives eyes. A photo whose face is not found counts as an error in balanced accuracy.
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

from benchmarks.common import HERE, ROOT, machine
from service import blazeface
from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL
from service.detection import Detection, FaceDetector, iou
from service.detector import create_detector
from service.preprocess import Box, preprocess_faces
from training.datasets import Sample, extract_archive, load_extracted

SETS = ("celeba_wild", "pixabay_portraits")
MATCH_IOU = 0.3


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


def pick_face(found: list[Detection], region: tuple[int, int, int, int] | None) -> Detection | None:
    """The detection that is the labelled face: by box where the set has one, else the most confident."""
    if region is None:
        return max(found, key=lambda d: d.score, default=None)
    x0, y0, x1, y1 = region
    truth = Box(x0, y0, x1 - x0, y1 - y0)
    best, best_iou = None, 0.0
    for det in found:
        cx, cy = det.box.x + det.box.width / 2, det.box.y + det.box.height / 2
        overlap = iou(det.box, truth)
        centred = x0 <= cx <= x1 and y0 <= cy <= y1
        if (overlap >= MATCH_IOU or centred) and (best is None or overlap > best_iou):
            best, best_iou = det, overlap
    return best


def ece(confidence: list[float], correct: list[bool], bins: int = 10) -> float:
    """Expected calibration error of the top-label confidence, equal-width bins."""
    conf, right = np.asarray(confidence), np.asarray(correct, float)
    total = 0.0
    for lo in np.linspace(0.5, 1.0, bins, endpoint=False):
        inside = (conf >= lo) & (conf < lo + 0.5 / bins + (1e-9 if lo + 0.5 / bins >= 1.0 else 0.0))
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return float(total)


def score(samples: list[Sample], faces: list[Detection | None], probs: list[float | None]) -> dict[str, Any]:
    """Detection rate, per-class recall (misses are errors), balanced accuracy and ECE on found faces."""
    recall = {}
    for label in ("female", "male"):
        rows = [p for s, p in zip(samples, probs, strict=True) if s.gender == label]
        hits = [p is not None and (p >= 0.5) == (label == "female") for p in rows]
        recall[label] = sum(hits) / len(rows)
    found = [(s, p) for s, p in zip(samples, probs, strict=True) if p is not None]
    conf = [max(p, 1 - p) for _, p in found]
    right = [(p >= 0.5) == (s.gender == "female") for s, p in found]
    return {
        "photos": len(samples),
        "detected": round(sum(f is not None for f in faces) / len(samples), 4),
        "balanced_accuracy": round((recall["female"] + recall["male"]) / 2, 4),
        "recall_female": round(recall["female"], 4),
        "recall_male": round(recall["male"], 4),
        "ece": round(ece(conf, right), 4),
    }


def run_setting(
    setting: Setting, detector: FaceDetector, classifier: GenderClassifier, data: dict[str, list[Sample]]
) -> tuple[dict[str, Any], dict[str, list[Detection | None]]]:
    female = classifier.labels.index("female")
    aligned = replace(classifier.spec, align=True)
    results: dict[str, Any] = {}
    picked: dict[str, list[Detection | None]] = {}
    for name, samples in data.items():
        faces: list[Detection | None] = []
        plain: list[float | None] = []
        turned: list[float | None] = []
        for sample in samples:
            image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
            face = pick_face(detector.detect(image, setting.threshold), sample.region)
            faces.append(face)
            if face is None:
                plain.append(None)
                turned.append(None)
                continue
            batch = preprocess_faces(image, [face.box], classifier.spec)
            plain.append(float(classifier.classify(batch)[0, female]))
            if face.eyes is not None:
                batch = preprocess_faces(image, [face.box], aligned, [face.eyes])
                turned.append(float(classifier.classify(batch)[0, female]))
        results[name] = {"crop as the model's metadata says": score(samples, faces, plain)}
        if len(turned) == len(samples):
            results[name]["aligned by the eyes"] = score(samples, faces, turned)
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
    report: dict[str, Any] = {"machine": f"{machine()}, load average {os.getloadavg()[0]:.1f}", "results": {}}
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
