"""Transfer learning: a gender head on the frozen dlib ResNet face descriptor, trained on cached descriptors.

Every training face is cut with the template crop the served model will get, described once by the backbone
(with its mirror image, which doubles the training rows), and the head, logistic or a small MLP, trains on
those rows in minutes. Early stopping watches the validation log-loss of the flip-averaged head, as it is
served. The run folder then holds one Keras model, backbone and head together (``best.keras``), which
``evaluate`` and ``export`` take like any other checkpoint.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from keras import layers

from training.backbone import CHIP_SIZE, CHIP_TEMPLATE, DESCRIPTOR_SIZE, backbone_dir, dlib_resnet
from training.datasets import LABELS, DatasetError
from training.descriptors import Descriptors, compute_descriptors, export_backbone
from training.external import recall_figures
from training.prepare import detect_samples, outcome_text
from training.train import (
    CHECKPOINT_NAME,
    LOG_NAME,
    STATE_NAME,
    RunState,
    TrainConfig,
    append_log,
    load_samples,
    sampling_weights,
)

HEADS = ("logistic", "mlp")
ARCH = "dlib_resnet"
BACKBONE_ONNX = "dlib_resnet.onnx"


def transfer_config(**overrides: Any) -> TrainConfig:
    """The head run's defaults: dlib's 150 px chip from BlazeFace's keypoints, raw pixels, a logistic head."""
    defaults: dict[str, Any] = {
        "arch": ARCH,
        "size": CHIP_SIZE,
        "margin": 0.25,  # used only where a detector gives no keypoints: dlib's own chip padding
        "scale": 1.0,
        "align": False,
        "outside": "edge",
        "template": [list(point) for point in CHIP_TEMPLATE],
        "head": "logistic",
        "epochs": 60,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "patience": 6,
        "augment": None,
        "label_smoothing": 0.0,
    }
    return TrainConfig(**{**defaults, **overrides})


def build_head(kind: str, mean: npt.NDArray[np.float32], variance: npt.NDArray[np.float32]) -> keras.Model:
    """A descriptor in, the softmax over LABELS out; the descriptor is standardised by the training rows' moments."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")
    inputs = keras.Input((DESCRIPTOR_SIZE,), name="descriptor")
    x = layers.Normalization(mean=mean, variance=variance, name="head_standardise")(inputs)
    if kind == "mlp":
        x = layers.Dense(64, activation="relu", name="head_hidden")(x)
        x = layers.Dropout(0.3, name="head_dropout")(x)
    outputs = layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{kind}_head")


def build_chip_classifier(backbone: keras.Model, head: keras.Model) -> keras.Model:
    """One model, chip in and probabilities out: the backbone, then the head."""
    inputs = keras.Input(backbone.input_shape[1:], name="input")
    return keras.Model(inputs, head(backbone(inputs)), name=f"{backbone.name}_{head.name}")


def _split(descriptors: Descriptors, split: str) -> Descriptors:
    index = np.array([i for i, s in enumerate(descriptors.samples) if s.split == split], dtype=np.int64)
    return descriptors.subset(index)


def flip_averaged_probs(head: keras.Model, d: Descriptors) -> npt.NDArray[np.float64]:
    """The head's probabilities averaged over each face and its mirror image, as the service serves them."""
    plain = head.predict(d.plain, batch_size=4096, verbose=0)
    mirrored = head.predict(d.mirrored, batch_size=4096, verbose=0)
    return np.asarray((plain.astype(np.float64) + mirrored) / 2.0)


class _ServedValidation(keras.callbacks.Callback):
    """Validation as served (flip-averaged), logged in train's log format; keeps the best weights and stops
    after ``patience`` epochs without a lower loss."""

    def __init__(self, val: Descriptors, log_path: Path, patience: int) -> None:
        super().__init__()
        self.val, self.log_path, self.patience = val, log_path, patience
        self.best_loss, self.best_weights, self.best_epoch = np.inf, None, -1
        self.epochs = 0
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        assert self.model is not None
        probs = flip_averaged_probs(self.model, self.val)
        y = self.val.y
        loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))
        figures = recall_figures(probs, y)
        row = {
            "epoch": epoch,
            "loss": (logs or {}).get("loss", np.nan),
            "accuracy": (logs or {}).get("accuracy", np.nan),
            "val_loss": loss,
            "val_accuracy": figures["accuracy"],
            "val_balanced_accuracy": figures["balanced_accuracy"],
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "seconds": time.monotonic() - self.started,
        }
        self.started = time.monotonic()
        append_log(self.log_path, row)
        self.epochs = epoch + 1
        if loss < self.best_loss:
            self.best_loss, self.best_weights, self.best_epoch = loss, self.model.get_weights(), epoch
        elif epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True
        print(
            f"  epoch {epoch + 1}: val loss {loss:.4f} (flip-averaged), balanced accuracy "
            f"{100 * figures['balanced_accuracy']:.2f}%",
            flush=True,
        )


def train_head(config: TrainConfig, out_dir: Path) -> Path:
    """Describe every face once, fit the head on the train split, and write the run folder."""
    if config.head not in HEADS:
        raise DatasetError(f"--head must be one of {', '.join(HEADS)}, not {config.head!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / CHECKPOINT_NAME).is_file():
        raise DatasetError(f"{out_dir} holds a run already; choose a new --out")
    keras.utils.set_random_seed(config.seed)
    cache = Path(config.cache_dir)
    samples = load_samples(config)
    records = detect_samples(samples, cache, config.detector, config.workers)  # type: ignore[arg-type]
    status = Counter(records[str(s.path)].status for s in samples)
    print(f"{len(samples)} images: {outcome_text(status)} (those without are left out)")
    if config.limit is not None:
        rng = np.random.default_rng(config.seed)
        by_split = {split: [s for s in samples if s.split == split] for split in ("train", "val", "test")}
        samples = [
            chosen[i]
            for chosen in by_split.values()
            for i in sorted(rng.choice(len(chosen), min(config.limit, len(chosen)), replace=False))
        ]
    backbone = dlib_resnet(cache)
    onnx_path = export_backbone(backbone, backbone_dir(cache) / BACKBONE_ONNX)
    started = time.monotonic()
    described = compute_descriptors(samples, records, config.crop_spec, onnx_path, cache)
    describe_seconds = time.monotonic() - started
    train_set, val_set, test_set = (_split(described, split) for split in ("train", "val", "test"))
    if not len(train_set.samples) or not len(val_set.samples):
        raise DatasetError("training needs faces in both the train and the val split; check --data")
    report = {
        "images": len(samples),
        "status": dict(status),
        **{
            name: {"images": sum(1 for s in samples if s.split == name), "with_face": len(part.samples),
                   "by_source": dict(Counter(s.source for s in part.samples))}
            for name, part in (("train", train_set), ("val", val_set), ("test", test_set))
        },
    }  # fmt: skip
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    (out_dir / "data.json").write_text(json.dumps(report, indent=2))

    x = np.concatenate([train_set.plain, train_set.mirrored])
    y = np.concatenate([train_set.y, train_set.y])
    weights = sampling_weights(train_set.samples) if config.balance else np.ones(len(train_set.samples))
    weights = np.concatenate([weights, weights]) * len(x) / (2 * weights.sum())
    head = build_head(config.head, x.mean(axis=0), x.var(axis=0))
    head.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    validation = _ServedValidation(val_set, out_dir / LOG_NAME, config.patience)
    fit_started = time.monotonic()
    head.fit(
        x,
        keras.utils.to_categorical(y, len(LABELS)),
        sample_weight=weights,
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[validation],
    )
    fit_seconds = time.monotonic() - fit_started
    assert validation.best_weights is not None
    head.set_weights(validation.best_weights)
    model = build_chip_classifier(backbone, head)
    checkpoint = out_dir / CHECKPOINT_NAME
    model.save(checkpoint)
    epochs = validation.epochs
    RunState(
        epochs_done=epochs,
        best_val_loss=validation.best_loss,
        learning_rate=config.learning_rate,
        seconds=fit_seconds,
        images=epochs * len(x),
        stopped_early=epochs < config.epochs,
    ).save(out_dir / STATE_NAME)
    (out_dir / "transfer.json").write_text(
        json.dumps(
            {
                "backbone": ARCH,
                "head": config.head,
                "best_epoch": validation.best_epoch + 1,
                "describe_seconds": round(describe_seconds, 1),
                "fit_seconds": round(fit_seconds, 1),
                "faces_described": len(described.samples),
            },
            indent=2,
        )
    )
    print(
        f"head {config.head}: best epoch {validation.best_epoch + 1} of {epochs}, val loss {validation.best_loss:.4f}; "
        f"described {len(described.samples)} faces in {describe_seconds / 60:.1f} min, fitted in {fit_seconds:.0f} s; "
        f"wrote {checkpoint}"
    )
    return checkpoint
