"""Annotate a video file: run the pipeline on frames, draw the faces, write the video back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from service.images import DecodedImage
from service.pipeline import FacePrediction, Pipeline, PredictOptions
from service.preprocess import Box
from service.render import draw_faces

# MJPG for .avi, MPEG-4 part 2 otherwise: both are built into the FFmpeg of opencv-python-headless.
FOURCC = {".avi": "MJPG"}
DEFAULT_FOURCC = "mp4v"
# Lucas-Kanade needs a few corners inside a face to move its box; with fewer the box stays put.
MIN_TRACK_POINTS = 4


class VideoError(Exception):
    """A video that cannot be read or written, with a message a person can act on."""


@dataclass(frozen=True)
class VideoReport:
    """What annotating one video did, and how fast."""

    frames: int
    detected_frames: int
    width: int
    height: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _grey(bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.uint8)


def track_faces(
    previous: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8], faces: list[FacePrediction]
) -> list[FacePrediction]:
    """Move each face's box by the median optical flow of the corners inside it (greyscale frames)."""
    height, width = current.shape[:2]
    moved = []
    for face in faces:
        b = face.box
        # Corners from the box's own pixels: a full-frame search with a mask costs over ten times as much.
        inside = np.ascontiguousarray(previous[b.y : b.y + b.height, b.x : b.x + b.width])
        corners = cv2.goodFeaturesToTrack(inside, maxCorners=40, qualityLevel=0.01, minDistance=3)
        if corners is None or len(corners) < MIN_TRACK_POINTS:
            moved.append(face)
            continue
        corners = (corners + np.array([b.x, b.y], np.float32)).astype(np.float32)
        found, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, corners, corners.copy())
        ok = status.reshape(-1) == 1
        if ok.sum() < MIN_TRACK_POINTS:
            moved.append(face)
            continue
        dx, dy = np.median((found - corners).reshape(-1, 2)[ok], axis=0)
        x = int(np.clip(round(b.x + float(dx)), 0, width - b.width))
        y = int(np.clip(round(b.y + float(dy)), 0, height - b.height))
        moved.append(replace(face, box=Box(x, y, b.width, b.height)))
    return moved


def follow_faces(
    pipeline: Pipeline,
    frames: Iterable[npt.NDArray[np.uint8]],
    options: PredictOptions,
    stride: int = 1,
    track: bool = False,
) -> Iterator[tuple[npt.NDArray[np.uint8], list[FacePrediction], bool]]:
    """Each frame with its faces and whether they were detected on it (every ``stride``-th frame); in between,
    the last faces are carried forward, or moved with the image content when ``track`` is set."""
    if stride < 1:
        raise ValueError("stride must be at least 1")
    faces: list[FacePrediction] = []
    previous: npt.NDArray[np.uint8] | None = None
    for index, bgr in enumerate(frames):
        grey = _grey(bgr) if track else None
        detect = index % stride == 0
        if detect:
            faces = pipeline.predict(DecodedImage(bgr, "video"), options).faces
        elif grey is not None and previous is not None and faces:
            faces = track_faces(previous, grey, faces)
        previous = grey
        yield bgr, faces, detect


def _read_frames(capture: cv2.VideoCapture) -> Iterator[npt.NDArray[np.uint8]]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield np.asarray(frame, np.uint8)


def annotate_video(
    pipeline: Pipeline,
    source: Path,
    target: Path,
    options: PredictOptions,
    stride: int = 1,
    track: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VideoReport:
    """Write ``target``: every frame of ``source`` with its faces drawn (see ``follow_faces``)."""
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise VideoError(f"cannot open {source} as a video (missing, or a format OpenCV's FFmpeg cannot read)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fourcc = cv2.VideoWriter.fourcc(*FOURCC.get(target.suffix.lower(), DEFAULT_FOURCC))
    writer = cv2.VideoWriter(str(target), fourcc, fps, (width, height))
    if not writer.isOpened():
        capture.release()
        raise VideoError(f"cannot write {target}; use an .mp4 or .avi file name in an existing folder")
    frames = detected = 0
    started = time.perf_counter()
    try:
        for bgr, faces, was_detected in follow_faces(pipeline, _read_frames(capture), options, stride, track):
            writer.write(draw_faces(bgr, faces))
            frames += 1
            detected += was_detected
            if progress is not None:
                progress(frames, total)
    finally:
        capture.release()
        writer.release()
    if frames == 0:
        raise VideoError(f"{source} has no frames OpenCV can decode")
    return VideoReport(frames, detected, width, height, time.perf_counter() - started)
