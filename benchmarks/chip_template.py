"""Where BlazeFace's keypoints land on dlib's own face chips: the template of the "template" crop kind.

Usage: python benchmarks/chip_template.py [--per-source 400] [--json benchmarks/chip_template.json]
(from the repository root with PYTHONPATH=.; needs the shared archives, the `train` extra (dlib-bin) and the
files of `python -m training fetch-backbone`)

The dlib ResNet descriptor was trained on chips cut by dlib's 5-point landmarks (``get_face_chip``, 150 px,
padding 0.25). The service has BlazeFace's keypoints instead, so it needs to know where those keypoints sit on
such a chip. For faces of three training sources with context (CelebA aligned, UTKFace in the wild, MTFL web
photos), this cuts dlib's chip (dlib's HOG detector and 5-point landmarks), runs BlazeFace on the chip (padded,
as training pads tight crops), and takes the median of each keypoint over all faces. ``CHIP_TEMPLATE`` in
training/backbone.py holds the figures it prints. It then cuts the same faces again with that template from
BlazeFace's keypoints on the original photo, and reports how far the two chips' descriptors lie apart against
the distance between two different faces' descriptors.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np

from benchmarks.common import HERE, machine
from service.detector import create_detector
from service.preprocess import KEYPOINTS, CropSpec, crop_face
from training.backbone import CHIP_SIZE, LANDMARKS_FILE, RESNET_FILE, backbone_dir
from training.datasets import extract_archive, load_extracted
from training.prepare import DEFAULT_CACHE, DEFAULT_SHARED, find_training_face, read_image

SOURCES = ("celeba_align_halfres_10k", "utkface_context", "mtfl_web")
PADDING = 0.25


def dlib_chips(image_bgr: np.ndarray, detector: Any, shapes: Any) -> list[np.ndarray]:
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    faces = detector(rgb, 1)
    if len(faces) != 1:
        return []
    return [dlib.get_face_chip(rgb, shapes(rgb, faces[0]), size=CHIP_SIZE, padding=PADDING)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--per-source", type=int, default=400)
    parser.add_argument("--json", type=Path, default=HERE / "chip_template.json")
    args = parser.parse_args()

    files = backbone_dir(args.cache)
    hog = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(files / LANDMARKS_FILE))
    descriptor = dlib.face_recognition_model_v1(str(files / RESNET_FILE))
    blaze = create_detector("blazeface")
    points: dict[str, list[tuple[float, float]]] = {name: [] for name in KEYPOINTS}
    pairs = []  # (dlib's chip, the photo and BlazeFace's detection on it)
    counts: dict[str, dict[str, int]] = {}
    for source in SOURCES:
        samples = load_extracted(extract_archive(args.shared / f"{source}.tar.gz", args.cache))
        step = max(1, len(samples) // args.per_source)
        tried = found = 0
        for sample in samples[::step][: args.per_source]:
            image = read_image(sample.path)
            if image is None:
                continue
            tried += 1
            chips = dlib_chips(image, hog, shapes)
            if not chips:
                continue
            chip_bgr = cv2.cvtColor(chips[0], cv2.COLOR_RGB2BGR)
            on_chip = find_training_face(chip_bgr, blaze)
            on_photo = find_training_face(image, blaze, sample.region)
            if on_chip is None or on_chip.keypoints is None or on_photo is None or on_photo.keypoints is None:
                continue
            found += 1
            for name, point in zip(KEYPOINTS, on_chip.keypoints, strict=True):
                points[name].append(point)
            pairs.append((chips[0], image, on_photo))
        counts[source] = {"tried": tried, "with_both_detectors": found}
        print(f"{source}: {found} of {tried} faces found by both detectors", flush=True)

    template = {
        name: [round(statistics.median(p[0] for p in pts), 1), round(statistics.median(p[1] for p in pts), 1)]
        for name, pts in points.items()
    }
    spread = {name: [round(float(np.std([p[i] for p in pts])), 1) for i in (0, 1)] for name, pts in points.items()}
    spec = CropSpec(size=CHIP_SIZE, margin=PADDING, outside="edge", template=tuple(map(tuple, template.values())))
    same, other = [], []
    previous = None
    for chip, image, found_face in pairs:
        ours = crop_face(image, found_face.box, spec, found_face.keypoints)  # RGB, as dlib takes it
        a = np.array(descriptor.compute_face_descriptor(chip))
        b = np.array(descriptor.compute_face_descriptor(np.ascontiguousarray(ours)))
        same.append(float(np.linalg.norm(a - b)))
        if previous is not None:
            other.append(float(np.linalg.norm(a - previous)))
        previous = a
    result = {
        "machine": machine(),
        "chip": {"size": CHIP_SIZE, "padding": PADDING},
        "faces": counts,
        "template_median_px": template,
        "template_std_px": spread,
        "descriptor_distance": {
            "dlib_chip_vs_template_chip_median": round(statistics.median(same), 4),
            "dlib_chip_vs_template_chip_p90": round(float(np.percentile(same, 90)), 4),
            "two_different_faces_median": round(statistics.median(other), 4),
            "dlib_same_person_threshold": 0.6,
        },
    }
    print(json.dumps(result, indent=1))
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
