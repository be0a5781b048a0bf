import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.detectors import iou
from benchmarks.video import read_frames, write_moving_face_video
from service.app import load_pipeline
from service.config import Settings
from service.pipeline import PredictOptions
from service.video import VideoError, annotate_video, follow_faces
from tests.conftest import ROOT

FRAMES, STEP = 30, 14  # the head slides 14 px a frame and is out of the frame from frame 27 on


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    return path, write_moving_face_video(path, FRAMES, step=STEP)


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(Settings())


def drawn_mask(before, after):
    """Pixels the annotation changed: far more than the codec's own noise."""
    return np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2) > 80


def test_annotate_video_command_draws_boxes_on_the_faces(clip, tmp_path):
    source, truth = clip
    target = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "annotate-video", str(source), str(target), "--stride", "3", "--track"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == FRAMES and summary["detected_frames"] == FRAMES // 3
    assert summary["size"] == [640, 360] and summary["fps"] > 0
    # Not a terminal, so no progress bar on stderr.
    assert "frames" not in result.stderr

    before, after = read_frames(source), read_frames(target)
    assert len(after) == FRAMES and after[0].shape == (360, 640, 3)
    for index, (box, original, annotated) in enumerate(zip(truth, before, after, strict=True)):
        changed = drawn_mask(original, annotated)
        if box is None:
            assert changed.sum() < 20, f"frame {index}: drawing without a face"
            continue
        # The box outline and the label above it lie within a margin around the true face.
        near = np.zeros_like(changed)
        near[max(0, box.y - 60) : box.y + box.height + 25, max(0, box.x - 25) : box.x + box.width + 60] = True
        assert changed.sum() > 300, f"frame {index}: no box drawn"
        assert changed[near].sum() / changed.sum() > 0.97, f"frame {index}: drawing away from the face"


def test_tracking_keeps_boxes_on_a_moving_face_between_detections(clip, pipeline):
    source, truth = clip
    frames = read_frames(source)

    def mean_iou(stride, track):
        followed = list(follow_faces(pipeline, frames, PredictOptions(), stride, track))
        scores = [
            iou(box, faces[0].box) if faces else 0.0 for box, (_, faces, _) in zip(truth, followed, strict=True) if box
        ]
        return float(np.mean(scores)), sum(detected for *_, detected in followed)

    carried, carried_detections = mean_iou(6, track=False)
    tracked, tracked_detections = mean_iou(6, track=True)
    assert carried_detections == tracked_detections == FRAMES // 6
    # 14 px a frame: a box carried for 5 frames falls 70 px behind a face about 90 px wide.
    assert tracked > 0.8 and tracked > carried + 0.15


def test_unreadable_video_is_a_clear_error(tmp_path, pipeline):
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match=r"not-a-video\.mp4"):
        annotate_video(pipeline, bad, tmp_path / "out.mp4", PredictOptions())
