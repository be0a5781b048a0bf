"""What every face detector backend shares: the detection record, the interface, and box geometry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from service.preprocess import KEYPOINTS, Box, Point

# Landmark names, as the subject sees them: "right_eye" is the eye on the image's left in an upright photo.
LANDMARKS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")

# A detector sometimes reports boxes that are mostly outside the frame or degenerate slivers
# in the image corners; a real face keeps most of its box inside the image.
MIN_INSIDE_FRACTION = 0.6
MIN_ASPECT, MAX_ASPECT = 0.4, 2.5


class DetectorFileMissing(FileNotFoundError):
    """A detector's weight or cascade file cannot be found."""


@dataclass(frozen=True)
class Detection:
    """One face found in an image."""

    box: Box
    score: float
    # Named points (see LANDMARKS) in pixels of the same image; None when the backend gives none.
    landmarks: dict[str, Point] | None = None

    @property
    def eyes(self) -> tuple[Point, Point] | None:
        """The subject's right and left eye (left and right in an upright photo), when known."""
        if self.landmarks is None:
            return None
        return self.landmarks["right_eye"], self.landmarks["left_eye"]

    @property
    def keypoints(self) -> tuple[Point, ...] | None:
        """The points a template crop is fitted to (``service.preprocess.KEYPOINTS``), when known."""
        if self.landmarks is None:
            return None
        return tuple(self.landmarks[name] for name in KEYPOINTS if name in self.landmarks)


class FaceDetector(Protocol):
    """Finds faces in a BGR uint8 image."""

    name: str
    default_threshold: float

    def detect(self, image_bgr: npt.NDArray[np.uint8], threshold: float | None = None) -> list[Detection]: ...


def shrink(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """Area-average ``image`` down to width x height, fast.

    OpenCV's INTER_AREA has a fast path for whole-number factors only; going there first and then
    the rest of the way is faster than one direct resize of a large image (benchmarks/stages.py).
    """
    h, w = image.shape[:2]
    factor = min(w // width, h // height)
    step = cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA) if factor >= 2 else image
    return np.asarray(cv2.resize(step, (width, height), interpolation=cv2.INTER_AREA), np.uint8)


def clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box | None:
    """Clip a box to the image; None when too little of it lies inside or it is not face-shaped."""
    area = (x1 - x0) * (y1 - y0)
    if x1 <= x0 or y1 <= y0 or area <= 0:
        return None
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    if (cx1 - cx0) * (cy1 - cy0) < MIN_INSIDE_FRACTION * area:
        return None
    aspect = (x1 - x0) / (y1 - y0)
    if not MIN_ASPECT <= aspect <= MAX_ASPECT:
        return None
    bx, by = round(cx0), round(cy0)
    bw, bh = round(cx1) - bx, round(cy1) - by
    if bw < 1 or bh < 1:
        return None
    return Box(bx, by, bw, bh)


def suppress_overlaps(found: list[Detection], max_iou: float = 0.4) -> list[Detection]:
    """Keep the best-scoring of boxes that overlap a lot; order by area, largest first."""
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: d.score, reverse=True):
        if all(iou(det.box, other.box) <= max_iou for other in kept):
            kept.append(det)
    return sorted(kept, key=lambda d: d.box.area, reverse=True)


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union else 0.0
