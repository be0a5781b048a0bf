"""One image in, per-face gender probabilities out: decode, detect, crop, classify."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service import metrics
from service.classifier import GenderClassifier
from service.detection import Detection, FaceDetector, shrink
from service.images import DecodedImage, decode_image
from service.preprocess import Box, Point, preprocess_faces

UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class PredictOptions:
    """Per-request knobs (the query parameters of /predict)."""

    min_face_size: int = 20
    max_faces: int = 100
    detection_threshold: float | None = None
    min_confidence: float = 0.0
    explain: bool = False


@dataclass(frozen=True)
class FacePrediction:
    box: Box
    detection_score: float
    probabilities: dict[str, float]
    label: str
    cam: dict[str, npt.NDArray[np.float32]] | None = None  # pre-pooling class map per label, when asked for
    landmarks: dict[str, Point] | None = None


@dataclass
class Prediction:
    """Everything /predict reports for one image."""

    image: DecodedImage
    faces: list[FacePrediction]
    timings_ms: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """The detector and classifier, loaded once and shared by all requests."""

    def __init__(self, detector: FaceDetector, classifier: GenderClassifier, detect_max_side: int, max_pixels: int):
        self.detector = detector
        self.classifier = classifier
        self.detect_max_side = detect_max_side
        self.max_pixels = max_pixels

    def decode(self, data: bytes) -> tuple[DecodedImage, float]:
        start = time.perf_counter()
        image = decode_image(data, self.max_pixels)
        seconds = time.perf_counter() - start
        metrics.STAGE_DURATION.labels(stage="decode").observe(seconds)
        return image, seconds * 1000

    def predict_bytes(self, data: bytes, options: PredictOptions) -> Prediction:
        started = time.perf_counter()
        image, decode_ms = self.decode(data)
        prediction = self.predict(image, options)
        prediction.timings_ms = {
            "decode": round(decode_ms, 2),
            **prediction.timings_ms,
            "total": round((time.perf_counter() - started) * 1000, 2),
        }
        return prediction

    def predict(self, image: DecodedImage, options: PredictOptions) -> Prediction:
        """Detect and classify every face of an upright image."""
        start = time.perf_counter()
        found = self.detect(image.bgr, options.detection_threshold)
        kept = [d for d in found if min(d.box.width, d.box.height) >= options.min_face_size][: options.max_faces]
        detected = time.perf_counter()
        batch = preprocess_faces(image.bgr, [d.box for d in kept], self.classifier.spec, [d.keypoints for d in kept])
        probs, maps = (
            self.classifier.classify_with_maps(batch) if options.explain else (self.classifier.classify(batch), None)
        )
        classified = time.perf_counter()
        metrics.STAGE_DURATION.labels(stage="detect").observe(detected - start)
        metrics.STAGE_DURATION.labels(stage="classify").observe(classified - detected)

        faces = []
        for n, (det, row) in enumerate(zip(kept, probs, strict=True)):
            p = {label: float(row[i]) for i, label in enumerate(self.classifier.labels)}
            best = max(p, key=lambda k: p[k])
            label = UNCERTAIN if options.min_confidence and p[best] < options.min_confidence else best
            cam = None if maps is None else {k: maps[n, :, :, i] for i, k in enumerate(self.classifier.labels)}
            faces.append(FacePrediction(det.box, det.score, p, label, cam, det.landmarks))
            metrics.PREDICTIONS.labels(label=label).inc()
        metrics.FACES_PER_IMAGE.observe(len(faces))
        metrics.IMAGES.labels(result="faces" if faces else "no_face").inc()
        timings = {"detect": round((detected - start) * 1000, 2), "classify": round((classified - detected) * 1000, 2)}
        return Prediction(image, faces, timings)

    def detect(self, bgr: npt.NDArray[np.uint8], threshold: float | None) -> list[Detection]:
        """Detect on a copy shrunk by the largest whole factor that keeps ``detect_max_side``; boxes map back."""
        height, width = bgr.shape[:2]
        factor = max(height, width) // self.detect_max_side
        if factor < 2:
            return self.detector.detect(bgr, threshold)
        small = shrink(bgr, width // factor, height // factor)
        scale_x, scale_y = width / small.shape[1], height / small.shape[0]
        mapped = []
        for det in self.detector.detect(small, threshold):
            b = det.box
            x0, y0 = round(b.x * scale_x), round(b.y * scale_y)
            x1, y1 = min(round((b.x + b.width) * scale_x), width), min(round((b.y + b.height) * scale_y), height)
            landmarks = None
            if det.landmarks is not None:
                landmarks = {name: (x * scale_x, y * scale_y) for name, (x, y) in det.landmarks.items()}
            mapped.append(Detection(Box(x0, y0, x1 - x0, y1 - y0), det.score, landmarks))
        return sorted(mapped, key=lambda d: d.box.area, reverse=True)

    def warm_up(self) -> None:
        """One real inference so the first request does not pay for lazy initialisation."""
        canvas = np.full((480, 640, 3), 128, np.uint8)
        self.detector.detect(canvas)
        spec = self.classifier.spec
        self.classifier.classify(np.zeros((1, *spec.shape), np.float32))
