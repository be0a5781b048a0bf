"""Speed and box accuracy of `facegender annotate-video` with and without a detection stride.

Writes a synthetic clip (the astronaut portrait sliding across a grey 640x360 frame, so the true face
box of every frame is known), annotates it with each setting and prints, as JSON, frames per second end
to end (decode, pipeline, drawing, encode; the best of --repeats rounds over all settings, since other
work on the machine only ever slows a run down) and the mean IoU of the drawn box with the true one over
the frames that show the face. Last, it times one box update of our optical-flow tracking against
OpenCV's MIL tracker (the one classic tracker in opencv-python-headless) and one full detection.

Usage: python benchmarks/video.py [--frames 120] [--repeats 5]
(from the repository root with PYTHONPATH=. so that `benchmarks` imports)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.common import PHOTOS, cpu_model
from benchmarks.detectors import FACE_SOURCES, iou
from service.app import load_pipeline
from service.config import Settings
from service.images import DecodedImage
from service.pipeline import Pipeline, PredictOptions
from service.preprocess import Box
from service.video import annotate_video, follow_faces, track_faces

# The part of the portrait that moves: top, left, height, width; it holds the whole head.
PATCH = (0, 100, 256, 256)


def write_moving_face_video(
    path: Path, frames: int, size: tuple[int, int] = (640, 360), step: int = 4, fourcc: str = "MJPG"
) -> list[Box | None]:
    """Write a clip of the portrait's head sliding right by ``step`` px a frame; return the true face box per frame
    (None once the head would leave the frame: from then on frames show only the grey background)."""
    portrait = cv2.imread(str(PHOTOS / "astronaut.jpg"))
    face = FACE_SOURCES["astronaut"].face
    top, left, height, width = PATCH
    patch = portrait[top : top + height, left : left + width]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 25.0, size)
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    boxes: list[Box | None] = []
    for index in range(frames):
        frame = np.full((size[1], size[0], 3), 100, np.uint8)
        x = 8 + step * index
        if x + width <= size[0]:
            frame[40 : 40 + height, x : x + width] = patch
            boxes.append(Box(face.x - left + x, face.y - top + 40, face.width, face.height))
        else:
            boxes.append(None)
        writer.write(frame)
    writer.release()
    return boxes


def read_frames(path: Path) -> list[npt.NDArray[np.uint8]]:
    """Every frame of a video file, decoded."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (read := capture.read())[0]:
        frames.append(np.asarray(read[1], np.uint8))
    capture.release()
    return frames


def median_ms(run: Callable[[int], object], count: int) -> float:
    """Median milliseconds of ``run(i)`` for i in 1..count-1."""
    times = []
    for index in range(1, count):
        start = time.perf_counter()
        run(index)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def update_costs(pipeline: Pipeline, frames: list[npt.NDArray[np.uint8]], first: Box, count: int) -> dict[str, float]:
    """Per-frame cost of moving one face box: optical flow, OpenCV's MIL tracker, or detecting and classifying again."""
    options = PredictOptions()
    grey = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in frames[:count]]
    faces = pipeline.predict(DecodedImage(frames[0], "video"), options).faces[:1]

    def flow(index: int) -> None:
        nonlocal faces  # the box moves on from frame to frame, as in annotate-video
        faces = track_faces(grey[index - 1], grey[index], faces)

    mil = cv2.TrackerMIL.create()
    mil.init(frames[0], (first.x, first.y, first.width, first.height))
    return {
        "flow_ms": median_ms(flow, count),
        "mil_ms": median_ms(lambda i: mil.update(frames[i]), count),
        "detect_ms": median_ms(lambda i: pipeline.predict(DecodedImage(frames[i], "video"), options), count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    settings = Settings()
    pipeline = load_pipeline(settings)
    options = PredictOptions()
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.avi"
        truth = write_moving_face_video(clip, args.frames)
        frames = read_frames(clip)
        with_face = [(i, box) for i, box in enumerate(truth) if box is not None]
        settings = ((1, False), (3, False), (3, True), (6, False), (6, True))
        # Round-robin over the settings, so that a busy spell on the machine hits all of them alike.
        runs = [
            [annotate_video(pipeline, clip, Path(folder) / "out.avi", options, *setting) for setting in settings]
            for _ in range(args.repeats)
        ]
        for column, (stride, track) in enumerate(settings):
            report = max((run[column] for run in runs), key=lambda r: r.fps)
            drawn = [faces for _, faces, _ in follow_faces(pipeline, frames, options, stride, track)]
            scores = [iou(box, drawn[i][0].box) if drawn[i] else 0.0 for i, box in with_face]
            row = {
                "stride": stride,
                "track": track,
                "fps": round(report.fps, 1),
                "mean_iou": round(float(np.mean(scores)), 3),
                "frames": report.frames,
                "detected_frames": report.detected_frames,
            }
            print(json.dumps(row), flush=True)
        print(json.dumps(update_costs(pipeline, frames, truth[0], count=40)))
    print(json.dumps({"cpu": cpu_model(), "opencv": cv2.__version__, "threads": 1, "load1": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
