"""Train a gender classifier on cached face crops, keeping the best checkpoint on validation.

TensorFlow is imported after ``training`` (its __init__) has set the CPU flags it needs.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from keras import layers

from service.preprocess import CropSpec, to_model_input
from training.datasets import LABELS, DatasetError, Sample, assign_splits, keep_adults, load_spec
from training.model import build_model
from training.prepare import DEFAULT_CACHE, DEFAULT_SHARED, build_crops, detect_samples, outcome_text

CHECKPOINT_NAME = "best.keras"


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` beside the checkpoint."""

    data: list[str] = field(default_factory=lambda: ["shared"])
    arch: str = "mini_xception"
    size: int = 64
    colour: str = "rgb"
    margin: float = 0.2
    square: bool = True
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 5
    seed: int = 1337
    limit: int | None = None
    cache_dir: str = str(DEFAULT_CACHE)
    shared_dir: str = str(DEFAULT_SHARED)
    detector: str = "blazeface"
    workers: int | None = None
    align: bool = False

    @property
    def crop_spec(self) -> CropSpec:
        return CropSpec(
            size=self.size,
            colour=self.colour,  # type: ignore[arg-type]
            margin=self.margin,
            square=self.square,
            align=self.align,
        )


@dataclass
class SplitData:
    """The crops and labels of one split."""

    samples: list[Sample]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    def counts(self) -> dict[str, int]:
        counter = Counter(int(v) for v in self.y)
        return {label: counter.get(i, 0) for i, label in enumerate(LABELS)}


def load_samples(config: TrainConfig) -> list[Sample]:
    """All samples of the configured data, with fixed splits, children dropped."""
    cache, shared = Path(config.cache_dir), Path(config.shared_dir)
    samples = [s for spec in config.data for s in load_spec(spec, cache, shared)]
    return keep_adults(assign_splits(samples))


def load_split_data(
    samples: list[Sample], config: TrainConfig, limit: int | None = None
) -> tuple[dict[str, SplitData], dict[str, Any]]:
    """Detect, crop and scale every sample; return the data per split and a report of what was used."""
    cache = Path(config.cache_dir)
    records = detect_samples(samples, cache, config.detector, config.workers)  # type: ignore[arg-type]
    report: dict[str, Any] = {
        "images": len(samples),
        "status": dict(Counter(records[str(s.path)].status for s in samples)),
    }
    data = {}
    rng = np.random.default_rng(config.seed)
    for split in ("train", "val", "test"):
        chosen = [s for s in samples if s.split == split]
        if limit is not None and len(chosen) > limit:
            chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), limit, replace=False))]
        usable, crops = build_crops(chosen, records, config.crop_spec, cache)
        y = np.array([s.label for s in usable], dtype=np.int64)
        data[split] = SplitData(usable, to_model_input(crops, config.crop_spec), y)
        report[split] = {
            "images": len(chosen),
            "with_face": len(usable),
            "by_source": dict(Counter(s.source for s in usable)),
        }
    return data, report


def build_augmenter(spec: CropSpec, seed: int) -> keras.Sequential:
    """Random flips, small rotations, zoom, brightness and contrast, applied inside the training graph."""
    low, high = spec.offset, 255.0 * spec.scale + spec.offset
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(10.0 / 360.0, fill_mode="constant", seed=seed),
            layers.RandomZoom(0.2, fill_mode="constant", seed=seed),
            layers.RandomBrightness(0.2, value_range=(low, high), seed=seed),
            layers.RandomContrast(0.2, value_range=(low, high), seed=seed),
        ],
        name="augment",
    )


class SaveBestInner(keras.callbacks.Callback):
    """Save the classifier (without the augmentation wrapper) whenever validation loss improves."""

    def __init__(self, inner: keras.Model, path: Path) -> None:
        super().__init__()
        self.inner, self.path, self.best = inner, path, float("inf")

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        loss = (logs or {}).get("val_loss", float("inf"))
        if loss < self.best:
            self.best = loss
            self.inner.save(self.path)
            print(f"\n  epoch {epoch + 1}: val_loss improved to {loss:.4f}, saved {self.path}", flush=True)


def class_weights(y: npt.NDArray[np.int64]) -> dict[int, float]:
    counts = np.bincount(y, minlength=len(LABELS))
    return {i: float(len(y) / (len(LABELS) * c)) for i, c in enumerate(counts) if c}


def train(config: TrainConfig, out_dir: Path) -> Path:
    """Run one training; write the best checkpoint, config, data report and CSV log to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    samples = load_samples(config)
    data, report = load_split_data(samples, config, config.limit)
    train_set, val_set = data["train"], data["val"]
    print(f"{report['images']} images: {outcome_text(report['status'])} (those without are left out)")
    if not len(train_set.y) or not len(val_set.y):
        raise DatasetError("training needs faces in both the train and the val split; check --data")
    print(f"train {train_set.counts()}  val {val_set.counts()}  (test kept aside: {data['test'].counts()})")
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    (out_dir / "data.json").write_text(json.dumps(report, indent=2))

    spec = config.crop_spec
    model = build_model(config.arch, spec.shape)
    inputs = keras.Input(shape=spec.shape, name="input")
    wrapper = keras.Model(inputs, model(build_augmenter(spec, config.seed)(inputs)), name="trainer")
    wrapper.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    checkpoint = out_dir / CHECKPOINT_NAME
    callbacks = [
        SaveBestInner(model, checkpoint),
        keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=max(1, config.patience // 2), min_lr=1e-5),
        keras.callbacks.CSVLogger(str(out_dir / "log.csv")),
    ]
    started = time.monotonic()
    wrapper.fit(
        train_set.x,
        train_set.y,
        validation_data=(val_set.x, val_set.y),
        epochs=config.epochs,
        batch_size=config.batch_size,
        class_weight=class_weights(train_set.y),
        callbacks=callbacks,
        shuffle=True,
        # A live progress bar on a terminal; one line per epoch in logs and CI.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    minutes = (time.monotonic() - started) / 60
    print(f"trained in {minutes:.1f} min; best checkpoint {checkpoint}")
    return checkpoint
