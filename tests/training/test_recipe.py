"""The training recipe: framing augmentation against the serving crop, the fill rule, balanced draws,
and a resumed run that continues as the uninterrupted one."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.preprocess import Box, CropSpec, crop_face
from tests.conftest import ROOT, read_fixture, write_labelled_variants
from training.datasets import Sample

pytestmark = pytest.mark.train


def test_a_centred_draw_at_the_serving_margin_is_the_serving_crop(astronaut):
    """Augmentation off, the square drawn out of the context crop frames the face as the service does."""
    from training.augment import Augment, augment_batch, context_spec

    spec = CropSpec(size=64, margin=0.25, outside="edge")
    box = Box(170, 40, 120, 150)
    augment = Augment.off(spec.margin)
    wide = crop_face(astronaut, box, context_spec(spec, Augment()))
    drawn = augment_batch(wide[np.newaxis], np.array([1, 2]), spec, augment).numpy()[0] * 255.0
    served = crop_face(astronaut, box, spec).astype(np.float32)
    # Two resamplings against one: the pictures agree to a few grey levels, far below the difference a
    # framing shifted by two pixels makes.
    assert np.abs(drawn - served).mean() < 4.0
    shifted = crop_face(astronaut, Box(box.x + 8, box.y, box.width, box.height), spec).astype(np.float32)
    assert np.abs(shifted - served).mean() > 2 * np.abs(drawn - served).mean()


def test_draws_vary_framing_and_are_a_function_of_their_seed(astronaut):
    from training.augment import Augment, augment_batch, context_spec

    spec = CropSpec(size=64, margin=0.25, outside="edge")
    wide = crop_face(astronaut, Box(170, 40, 120, 150), context_spec(spec, Augment()))
    batch = np.repeat(wide[np.newaxis], 8, axis=0)
    first = augment_batch(batch, np.array([7, 0]), spec, Augment()).numpy()
    again = augment_batch(batch, np.array([7, 0]), spec, Augment()).numpy()
    other = augment_batch(batch, np.array([7, 1]), spec, Augment()).numpy()
    assert first.shape == (8, 64, 64, 3) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len({img.tobytes() for img in first}) == 8  # each image of a batch draws its own


def test_a_crop_past_the_photo_edge_carries_the_edge_pixels_out():
    """The fill rule of "edge": every pixel beyond the photo repeats the nearest pixel of its border."""
    photo = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    spec = CropSpec(size=60, margin=0.0, square=False, outside="edge")
    crop = crop_face(photo, Box(-20, 0, 60, 60), spec)  # 20 columns left of the photo, scale 1
    rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    for column in range(20):
        np.testing.assert_array_equal(crop[:, column], rgb[:60, 0])
    np.testing.assert_array_equal(crop[:, 20:], rgb[:60, :40])
    black = crop_face(photo, Box(-20, 0, 60, 60), replace(spec, outside="black"))
    assert black[:, :20].max() == 0


def test_aligned_crops_fill_the_same_way(astronaut):
    spec = CropSpec(size=64, margin=0.4, align=True, outside="edge")
    eyes = ((8.0, 30.0), (40.0, 30.0))  # near the photo's left edge: the crop runs past it
    crop = crop_face(astronaut, Box(0, 0, 50, 60), spec, eyes)
    assert crop[:, :4].max() > 0  # not black
    assert np.abs(crop[:, 0].astype(int) - crop[:, 1].astype(int)).max() <= 2  # repeated columns


def test_the_training_edge_step_repeats_a_line_as_the_serving_fill_does():
    """A simulated photo border in augmentation uses the serving rule: the pixels past it copy it."""
    import tensorflow as tf

    from training.augment import _edge

    images = tf.constant(np.random.default_rng(1).uniform(0, 255, (64, 32, 32, 3)), tf.float32)
    out = _edge(images, tf.constant([3, 4], tf.int64), tf.constant(64), 32, 1.0).numpy()
    changed = 0
    for before, after in zip(images.numpy(), out, strict=True):
        diff_rows = np.where(np.abs(after - before).max(axis=(1, 2)) > 0)[0]
        diff_columns = np.where(np.abs(after - before).max(axis=(0, 2)) > 0)[0]
        assert len(diff_rows) == 0 or len(diff_columns) == 0 or len(diff_rows) == 32 or len(diff_columns) == 32
        if len(diff_columns) and len(diff_columns) < 32:  # a left or right border
            edge = diff_columns.max() + 1 if diff_columns.min() == 0 else diff_columns.min() - 1
            for c in diff_columns:
                np.testing.assert_array_equal(after[:, c], before[:, edge])
            changed += 1
        elif len(diff_rows) and len(diff_rows) < 32:
            edge = diff_rows.max() + 1 if diff_rows.min() == 0 else diff_rows.min() - 1
            for r in diff_rows:
                np.testing.assert_array_equal(after[r], before[edge])
            changed += 1
    assert changed == 64


def _sample(i: int, source: str, gender: str, race: str | None = None, age: int | None = None) -> Sample:
    return Sample(Path(f"{source}/{i}.jpg"), gender, source, age=age, race=race)


def test_draws_balance_gender_within_each_source_and_keep_its_share():
    from training.train import epoch_order, sampling_weights

    samples = (
        [_sample(i, "a", "female") for i in range(900)]
        + [_sample(i, "a", "male") for i in range(100, 400)]
        + [_sample(i, "b", "female", "White", 30) for i in range(600)]
        + [_sample(i, "b", "female", "Black", 70) for i in range(600, 640)]
        + [_sample(i, "b", "male", "White", 30) for i in range(400)]
    )
    weights = sampling_weights(samples)
    order = epoch_order(len(samples), 200_000, 5, 0, weights)
    drawn = Counter((samples[i].source, samples[i].gender) for i in order)
    total = sum(drawn.values())
    assert drawn[("a", "female")] / total == pytest.approx(1200 / 2240 / 2, abs=0.01)
    assert drawn[("a", "male")] / total == pytest.approx(1200 / 2240 / 2, abs=0.01)
    assert (drawn[("b", "female")] + drawn[("b", "male")]) / total == pytest.approx(1040 / 2240, abs=0.01)
    black = sum(1 for i in order if samples[i].race == "Black") / drawn[("b", "female")]
    assert 40 / 640 < black < 0.5  # the small cell drawn more often than its share, not as often as the large
    np.testing.assert_array_equal(order, epoch_order(len(samples), 200_000, 5, 0, weights))
    assert not np.array_equal(order, epoch_order(len(samples), 200_000, 5, 1, weights))


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    """Real faces: the astronaut and the cameraman, each shifted, brightened and mirrored into several photos."""
    man = cv2.imread(str(ROOT / "benchmarks" / "photos" / "camera.jpg"))
    rows = []
    for gender, image in (("female", read_fixture("astronaut.jpg")), ("male", man)):
        rows += write_labelled_variants(tmp_path, gender, image, ["train"] * 6 + ["val"] * 2)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,gender,split\n" + "\n".join(rows) + "\n")
    return labels


@pytest.mark.slow
def test_a_resumed_run_continues_as_the_uninterrupted_one(tiny_csv, tmp_path):
    """Three epochs in one go against one epoch, a stop, and --resume to three: the same weights."""
    import keras

    from training.train import TrainConfig, train

    common = {
        "data": [f"csv:{tiny_csv}"], "epochs": 3, "batch_size": 4, "cache_dir": str(tmp_path / "cache"),
        "shared_dir": str(tmp_path / "no-shared"), "workers": 1, "patience": 10,
    }  # fmt: skip
    train(TrainConfig(**common), tmp_path / "whole")
    train(TrainConfig(**{**common, "epochs": 1}), tmp_path / "cut")
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["epochs_done"] == 1
    with pytest.raises(ValueError, match="--resume"):
        train(TrainConfig(**common), tmp_path / "cut")
    cut = TrainConfig(**json.loads((tmp_path / "cut" / "config.json").read_text()))
    train(replace(cut, epochs=3), tmp_path / "cut", resume=True)

    whole = keras.models.load_model(tmp_path / "whole" / "last.keras")
    resumed = keras.models.load_model(tmp_path / "cut" / "last.keras")
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert int(whole.optimizer.iterations) == int(resumed.optimizer.iterations) > 0
    logs = [(tmp_path / run / "log.csv").read_text().splitlines() for run in ("whole", "cut")]
    assert len(logs[0]) == len(logs[1]) == 4
    assert [row.split(",")[:7] for row in logs[0]] == [row.split(",")[:7] for row in logs[1]]


def test_resume_without_a_completed_epoch_says_so(tmp_path):
    from training.__main__ import main

    (tmp_path / "run").mkdir()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
