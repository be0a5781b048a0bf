"""Speed and box accuracy of `facegender annotate-video` with and without a detection stride.

Writes a synthetic clip (the astronaut portrait from tests/fixtures sliding across a grey 640x360 frame,
so the true face box of every frame is known), annotates it with each setting and prints, as JSON,
frames per second end to end (decode, pipeline, drawing, encode) and the mean IoU of the drawn box with
the true one.

Usage: python benchmarks/video.py [--frames 120]
(from the repository root, with the project installed or PYTHONPATH=.)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks.detectors import FACE_SOURCES, PHOTOS, cpu_model, iou
from service.app import load_pipeline
from service.config import Settings
from service.pipeline import PredictOptions
from service.preprocess import Box
from service.video import annotate_video, follow_faces

# The part of the portrait that moves: top, left, height, width; it holds the whole head.
PATCH = (0, 100, 256, 256)


def write_moving_face_video(
    path: Path, frames: int, size: tuple[int, int] = (640, 360), step: int = 4, fourcc: str = "MJPG"
) -> list[Box | None]:
    """Write a clip of the portrait's head sliding right by ``step`` px a frame; return the true face box per frame.

    Once the head would leave the frame, frames show only the grey background (and the box is None).
    """
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    settings = Settings()
    pipeline = load_pipeline(settings)
    options = PredictOptions()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.avi"
        truth = write_moving_face_video(clip, args.frames)
        frames = []
        capture = cv2.VideoCapture(str(clip))
        while (read := capture.read())[0]:
            frames.append(read[1])
        with_face = [(i, box) for i, box in enumerate(truth) if box is not None]
        for stride, track in ((1, False), (3, False), (3, True), (6, False), (6, True)):
            report = annotate_video(pipeline, clip, Path(folder) / "out.avi", options, stride, track)
            drawn = [faces for _, faces, _ in follow_faces(pipeline, frames, options, stride, track)]
            scores = [iou(box, drawn[i][0].box) if drawn[i] else 0.0 for i, box in with_face]
            rows.append(
                {
                    "stride": stride,
                    "track": track,
                    "fps": round(report.fps, 1),
                    "mean_iou": round(float(np.mean(scores)), 3),
                    "frames": report.frames,
                    "detected_frames": report.detected_frames,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"cpu": cpu_model(), "opencv": cv2.__version__, "threads": 1, "load1": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
