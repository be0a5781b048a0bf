"""End-to-end figures on any labelled photo set: each whole photo through the service's decode and
detector, the labelled face cropped as the model's spec says, a photo whose face is missed an error.

Nothing here imports TensorFlow: ``predict`` is any callable from a model batch to softmax
probabilities, a Keras model's ``predict`` or an onnxruntime session's ``run``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from service.calibration import apply_temperature
from service.classifier import GenderClassifier
from service.detection import Detection, FaceDetector, iou
from service.detector import Backend, create_detector
from service.errors import ServiceError
from service.images import decode_image
from service.preprocess import Box, CropSpec, preprocess_faces
from training.datasets import LABELS, DatasetError, Sample, load_spec

# A detection is the labelled face when it overlaps the labelled box this much, or its centre lies inside it.
MATCH_IOU = 0.3
ECE_BINS = 15
BATCH = 256
# The service refuses uploads over its max_pixels setting; a photo set on disk is read up to PIL's own guard.
MAX_PIXELS = 200_000_000
REPORT_NAME = "external.json"

Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[Any]]
Region = tuple[int, int, int, int]


def read_photo(sample: Sample) -> npt.NDArray[np.uint8]:
    """The photo upright as BGR, decoded exactly as the service decodes an upload."""
    try:
        return decode_image(sample.path.read_bytes(), MAX_PIXELS).bgr
    except (OSError, ServiceError) as exc:
        raise DatasetError(f"{sample.path}: cannot read the photo ({exc})") from None


def pick_face(found: Sequence[Detection], region: Region | None) -> Detection | None:
    """The detection that is the labelled face: by the labelled (x0, y0, x1, y1) box when given, else the most
    confident. A detection matches when IoU >= MATCH_IOU or its centre lies inside the box; the best IoU wins."""
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


def find_face(
    image: npt.NDArray[np.uint8],
    detector: FaceDetector,
    region: Region | None = None,
    pad: float = 0.0,
    threshold: float | None = None,
) -> Detection | None:
    """Detect on the photo, with a black border of ``pad`` times its longest side when asked (tight face crops
    give a detector no context), and return the labelled face in the photo's own pixels."""
    border = int(pad * max(image.shape[:2]))
    if border:
        image = np.asarray(
            cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        )
    found = detector.detect(image, threshold)
    if border:
        found = [_shift(d, -border) for d in found]
    return pick_face(found, region)


def classify_photos(
    samples: Sequence[Sample],
    predict: Predict,
    crops: Mapping[str, CropSpec],
    detector: FaceDetector,
    *,
    pad: float = 0.0,
    flip: bool = False,
    temperature: float = 1.0,
    labels: Sequence[str] = LABELS,
    threshold: float | None = None,
) -> tuple[list[Detection | None], dict[str, npt.NDArray[np.float64]]]:
    """Detect once per photo, crop its face with every spec in ``crops`` and classify.

    Returns the face picked in each photo (None: missed) and, per crop, calibrated probabilities (N, 2) in
    LABELS order, NaN where no face was found. ``labels`` is the order of ``predict``'s columns; with
    ``flip`` the raw probabilities of each face and its mirror image are averaged before the temperature.
    """
    order = [list(labels).index(label) for label in LABELS]
    faces: list[Detection | None] = []
    probs = {name: np.full((len(samples), len(LABELS)), np.nan) for name in crops}
    for start in range(0, len(samples), BATCH):
        rows: list[int] = []
        batches: dict[str, list[npt.NDArray[np.float32]]] = {name: [] for name in crops}
        for i in range(start, min(start + BATCH, len(samples))):
            image = read_photo(samples[i])
            face = find_face(image, detector, samples[i].region, pad, threshold)
            faces.append(face)
            if face is None:
                continue
            rows.append(i)
            for name, spec in crops.items():
                batches[name].append(preprocess_faces(image, [face.box], spec, [face.keypoints]))
        if not rows:
            continue
        for name, parts in batches.items():
            batch = np.concatenate(parts)
            if flip:
                raw = np.asarray(predict(np.concatenate([batch, batch[:, :, ::-1]])), np.float64)
                raw = (raw[: len(batch)] + raw[len(batch) :]) / 2
            else:
                raw = np.asarray(predict(batch), np.float64)
            probs[name][rows] = apply_temperature(raw[:, order], temperature)
    return faces, probs


def expected_calibration_error(probs: npt.NDArray[np.float64], y: npt.NDArray[np.int64], bins: int = ECE_BINS) -> float:
    """ECE over equal-width confidence bins of max(p)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def photo_figures(samples: Sequence[Sample], probs: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Detection rate and the classification figures over all photos, a missed face counted as a confident
    wrong answer, and over the found faces only; a class absent from the set has recall None."""
    y = np.array([s.label for s in samples], dtype=np.int64)
    found = ~np.isnan(probs[:, 0])
    # A missed face is scored as a confident wrong answer, so misses cannot flatter any figure.
    scored = np.where(found[:, np.newaxis], probs, np.eye(len(LABELS))[1 - y])
    return {
        "images": len(y),
        "faces_found": int(found.sum()),
        "detection_rate": float(found.mean()) if len(y) else None,
        **_figures(scored, y),
        "found_faces": _figures(probs[found], y[found]),
    }


def evaluate_photos(
    samples: Sequence[Sample],
    predict: Predict,
    spec: CropSpec,
    detector: FaceDetector,
    margins: Sequence[float] | None = None,
    *,
    pad: float = 0.0,
    flip: bool = False,
    temperature: float = 1.0,
    labels: Sequence[str] = LABELS,
    threshold: float | None = None,
) -> dict[str, Any]:
    """``photo_figures`` of one labelled photo set per crop margin (default: the spec's own), keyed by the
    margin as text; the detector runs once per photo for all margins."""
    crops = {f"{m:g}": replace(spec, margin=m) for m in ((spec.margin,) if margins is None else margins)}
    _, probs = classify_photos(
        samples,
        predict,
        crops,
        detector,
        pad=pad,
        flip=flip,
        temperature=temperature,
        labels=labels,
        threshold=threshold,
    )
    return {name: photo_figures(samples, p) for name, p in probs.items()}


def recall_figures(probs: npt.NDArray[Any], y: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Balanced accuracy, per-class recall (None for a class the set lacks) and accuracy of argmax predictions."""
    pred = probs.argmax(axis=1)
    recall = {label: float((pred[y == i] == i).mean()) if (y == i).any() else None for i, label in enumerate(LABELS)}
    present = [r for r in recall.values() if r is not None]
    return {
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "recall": recall,
        "accuracy": float((pred == y).mean()) if len(y) else None,
    }


def _figures(probs: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> dict[str, Any]:
    return {**recall_figures(probs, y), "ece": expected_calibration_error(probs, y) if len(y) else None}


def _shift(det: Detection, by: int) -> Detection:
    box = Box(det.box.x + by, det.box.y + by, det.box.width, det.box.height)
    landmarks = None if det.landmarks is None else {k: (x + by, y + by) for k, (x, y) in det.landmarks.items()}
    return Detection(box, det.score, landmarks)


@dataclass(frozen=True)
class SavedModel:
    """A saved classifier as evaluation needs it: raw softmax probabilities, and how it is served."""

    predict: Predict
    spec: CropSpec
    labels: tuple[str, ...]
    temperature: float
    temperature_from: str
    detector: Backend
    flip: bool = False  # whether it is served flip-averaged (the metadata's, or its evaluation's, choice)


def load_saved_model(path: Path, detector: Backend = "blazeface") -> SavedModel:
    """An ``.onnx`` model with its metadata JSON beside it, served with ``detector``, or a ``.keras``
    checkpoint with its run's detector and crop (config.json) and temperature (evaluation.json, else 1.0)."""
    if path.suffix == ".onnx":
        onnx = GenderClassifier(path)
        session, feed, output = onnx.session, onnx.input_name, onnx.output_name
        return SavedModel(
            lambda x: session.run([output], {feed: x})[0],
            onnx.spec,
            tuple(onnx.labels),
            onnx.temperature,
            "the model's metadata",
            detector,
            onnx.flip_average,
        )
    if path.suffix != ".keras":
        raise DatasetError(f"{path}: expected a .keras checkpoint or an .onnx model")
    import keras

    import training.model  # noqa: F401  (registers the backbone layers load_model needs)
    from training.train import TrainConfig

    config = TrainConfig(**json.loads((path.parent / "config.json").read_text()))
    model = keras.models.load_model(path, compile=False)
    evaluation = path.parent / "evaluation.json"
    fitted = evaluation.is_file()
    evaluated = json.loads(evaluation.read_text()) if fitted else {}
    return SavedModel(
        lambda x: model.predict(x, batch_size=BATCH, verbose=0),
        config.crop_spec,
        LABELS,
        float(evaluated["temperature"]) if fitted else 1.0,
        str(evaluation) if fitted else "none fitted (no evaluation.json beside the checkpoint): 1.0",
        config.detector,  # type: ignore[arg-type]
        bool(evaluated.get("flip_average", False)),
    )


def evaluate_external(
    model_path: Path,
    specs: Sequence[str],
    out_dir: Path | None = None,
    margins: Sequence[float] | None = None,
    *,
    pad: float = 0.0,
    flip: bool | None = None,
    limit: int | None = None,
    cache_dir: Path,
    shared_dir: Path,
    detector: Backend = "blazeface",
) -> dict[str, Any]:
    """``evaluate_photos`` of a saved model on each FORMAT:PATH photo set (``limit``: about that many photos
    of each, evenly spread); print the table and write external.json to ``out_dir``, else beside the model.
    ``flip`` None: flip-averaged as the model is served."""
    model = load_saved_model(model_path, detector)
    flip = model.flip if flip is None else flip
    face_detector = create_detector(model.detector)
    sets = {}
    for spec in specs:
        samples = load_spec(spec, cache_dir, shared_dir)
        if limit:
            samples = samples[:: max(1, len(samples) // limit)][:limit]
        sets[spec] = evaluate_photos(
            samples,
            model.predict,
            model.spec,
            face_detector,
            margins,
            pad=pad,
            flip=flip,
            temperature=model.temperature,
            labels=model.labels,
        )
    report = {
        "model": str(model_path),
        "detector": model.detector,
        "crop": model.spec.to_dict(),
        "temperature": model.temperature,
        "temperature_from": model.temperature_from,
        "pad": pad,
        "flip": flip,
        "limit": limit,
        "sets": sets,
    }
    out = (out_dir or model_path.parent) / REPORT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(external_table(report))
    print(f"temperature {model.temperature:.3f} from {model.temperature_from}; detector {model.detector}; wrote {out}")
    return report


def external_table(report: Mapping[str, Any]) -> str:
    """The Markdown table of an external.json report: one row per photo set and margin."""
    lines = [
        "| photo set | margin | images | faces found | balanced acc. | female / male recall | accuracy | ECE "
        "| found faces only: balanced acc. | ECE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, by_margin in report["sets"].items():
        for margin, f in by_margin.items():
            found = f["found_faces"]
            lines.append(
                f"| {name} | {margin} | {f['images']} | {f['faces_found']} ({_pct(f['detection_rate'])}) "
                f"| {_pct(f['balanced_accuracy'])} | {_pct(f['recall']['female'])} / {_pct(f['recall']['male'])} "
                f"| {_pct(f['accuracy'])} | {_pct(f['ece'])} | {_pct(found['balanced_accuracy'])} "
                f"| {_pct(found['ece'])} |"
            )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
