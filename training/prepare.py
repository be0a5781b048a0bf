"""Extract the shared archives once, then find each training face with the serving detector.

Every training image goes through the detector the service uses; the box it finds is cached
per image so that crops for any CropSpec can be cut again without re-detecting.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from service.detector import Backend, Detection, FaceDetector, create_detector
from service.preprocess import KEYPOINTS, Box, CropSpec, Point, crop_face
from training.datasets import DatasetError, Sample, extract_archive

DEFAULT_CACHE = Path(os.environ.get("FACEGENDER_CACHE", Path.home() / ".cache" / "facegender"))
DEFAULT_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
# The shared crops are tight; a black border of this fraction of the longest side on every side
# lets the detector see the whole face, as it would in a full photograph.
DETECTION_PAD = 0.3


def extract_archives(shared_dir: Path, cache_dir: Path) -> list[Path]:
    """Unpack every ``*.tar.gz`` of ``shared_dir`` into the cache once; return the folders."""
    archives = sorted(shared_dir.glob("*.tar.gz"))
    if not archives:
        raise DatasetError(f"no *.tar.gz archives in {shared_dir}; --shared-dir names the folder that holds them")
    return [extract_archive(archive, cache_dir) for archive in archives]


def read_image(path: Path) -> npt.NDArray[np.uint8] | None:
    """Read an image as BGR uint8 with EXIF orientation applied; None if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, dtype=np.uint8)


def find_training_face(
    image: npt.NDArray[np.uint8], detector: FaceDetector, region: tuple[int, int, int, int] | None = None
) -> Detection | None:
    """Detect the face of a single-face training image: pad, detect, keep the best-scoring face."""
    ox = oy = 0
    if region is not None:
        x0, y0, x1, y1 = region
        grow = int(0.5 * max(x1 - x0, y1 - y0))
        ox, oy = max(x0 - grow, 0), max(y0 - grow, 0)
        image = image[oy : y1 + grow, ox : x1 + grow]
    pad = int(DETECTION_PAD * max(image.shape[:2]))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    found = detector.detect(padded)
    if not found:
        return None
    best = max(found, key=lambda d: d.score)
    box = best.box
    landmarks = None
    if best.landmarks is not None:
        landmarks = {name: (x - pad + ox, y - pad + oy) for name, (x, y) in best.landmarks.items()}
    return Detection(Box(box.x - pad + ox, box.y - pad + oy, box.width, box.height), best.score, landmarks)


@dataclass(frozen=True)
class FaceRecord:
    """The cached detection for one image: a box, or None when no face was found or it was unreadable."""

    box: Box | None
    score: float
    status: str  # "ok", "no_face" or "unreadable"
    # The face's keypoints (service.preprocess.KEYPOINTS: the eyes, nose tip, mouth), where the detector finds them.
    points: tuple[Point, ...] | None = None

    @property
    def eyes(self) -> tuple[Point, Point] | None:
        return None if self.points is None else (self.points[0], self.points[1])


_WORKER_DETECTOR: FaceDetector | None = None


def _init_worker(backend: Backend) -> None:
    global _WORKER_DETECTOR
    cv2.setNumThreads(1)
    _WORKER_DETECTOR = create_detector(backend)


def _detect_one(item: tuple[str, tuple[int, int, int, int] | None]) -> tuple[str, FaceRecord]:
    path, region = item
    assert _WORKER_DETECTOR is not None
    image = read_image(Path(path))
    if image is None:
        return path, FaceRecord(None, 0.0, "unreadable")
    found = find_training_face(image, _WORKER_DETECTOR, region)
    if found is None:
        return path, FaceRecord(None, 0.0, "no_face")
    return path, FaceRecord(found.box, found.score, "ok", found.keypoints)


POINT_COLUMNS = tuple(f"{name}_{axis}" for name in KEYPOINTS for axis in "xy")


def detection_cache_path(cache_dir: Path, backend: Backend) -> Path:
    # "-keypoints": the cache of earlier versions kept the eyes alone and is not read.
    return cache_dir / f"detections-{backend}-keypoints.csv"


def load_detections(cache_dir: Path, backend: Backend = "blazeface") -> dict[str, FaceRecord]:
    path = detection_cache_path(cache_dir, backend)
    records: dict[str, FaceRecord] = {}
    if not path.is_file():
        return records
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            box = Box(int(row["x"]), int(row["y"]), int(row["width"]), int(row["height"])) if row["x"] else None
            points = None
            if row.get("right_eye_x"):
                values = [float(row[k]) for k in POINT_COLUMNS]
                points = tuple((values[i], values[i + 1]) for i in range(0, len(values), 2))
            records[row["path"]] = FaceRecord(box, float(row["score"]), row["status"], points)
    return records


def detect_samples(
    samples: Sequence[Sample], cache_dir: Path, backend: Backend = "blazeface", workers: int | None = None
) -> dict[str, FaceRecord]:
    """Detect the face of every sample not yet in the cache (resumable), append, and return all records."""
    records = load_detections(cache_dir, backend)
    todo = [(str(s.path), s.region) for s in samples if str(s.path) not in records]
    if not todo:
        return records
    path = detection_cache_path(cache_dir, backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.is_file() or path.stat().st_size == 0  # a run stopped before its header wrote nothing
    started = time.monotonic()
    with (
        path.open("a", newline="") as handle,
        get_context("spawn").Pool(
            workers or os.cpu_count() or 1, initializer=_init_worker, initargs=(backend,)
        ) as pool,
    ):
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(["path", "x", "y", "width", "height", "score", "status", *POINT_COLUMNS])
        outcomes: Counter[str] = Counter()
        for done, (image_path, record) in enumerate(pool.imap_unordered(_detect_one, todo, chunksize=32), 1):
            box = record.box
            coords = [box.x, box.y, box.width, box.height] if box else ["", "", "", ""]
            points = record.points if record.points and len(record.points) == len(KEYPOINTS) else None
            values = [f"{v:.1f}" for point in points for v in point] if points else [""] * len(POINT_COLUMNS)
            writer.writerow([image_path, *coords, f"{record.score:.4f}", record.status, *values])
            records[image_path] = record
            outcomes[record.status] += 1
            if done % 2000 == 0 or done == len(todo):
                rate = done / (time.monotonic() - started)
                progress = f"looked for faces in {done}/{len(todo)} images ({rate:.0f}/s)"
                print(f"  {progress}: {outcome_text(outcomes)}", flush=True)
                handle.flush()
    return records


def outcome_text(statuses: Mapping[str, int]) -> str:
    """Detection outcomes as a person reads them: '22 with a face, 2 without, 0 unreadable'."""
    return (
        f"{statuses.get('ok', 0)} with a face, {statuses.get('no_face', 0)} without, "
        f"{statuses.get('unreadable', 0)} unreadable"
    )


def spec_key(spec: CropSpec, samples: Iterable[Sample]) -> str:
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for sample in samples:
        digest.update(str(sample.path).encode())
    return digest.hexdigest()[:16]


def build_crops(
    samples: Sequence[Sample], records: dict[str, FaceRecord], spec: CropSpec, cache_dir: Path
) -> tuple[list[Sample], npt.NDArray[np.uint8]]:
    """Cut every detected face once with the serving crop; cache the uint8 array per spec and sample list.

    Returns the samples that have a face, in order, and their crops.
    """
    usable = [s for s in samples if (r := records.get(str(s.path))) is not None and r.box is not None]
    key = spec_key(spec, usable)
    path = cache_dir / "crops" / f"{key}.npy"
    if path.is_file():
        return usable, np.load(path)
    crops = np.empty((len(usable), *spec.shape), dtype=np.uint8)
    for i, sample in enumerate(usable):
        image = read_image(sample.path)
        record = records[str(sample.path)]
        assert image is not None and record.box is not None
        crops[i] = crop_face(image, record.box, spec, record.points)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, crops)
    return usable, crops
