"""Train a gender classifier on cached face crops, keeping the best checkpoint on validation.

Each epoch is resumable: after it, the model with its optimizer state and the run's state are saved,
and every epoch's data order and augmentation are drawn from (seed, epoch) alone, so ``--resume RUNDIR``
continues a cut-off run with the batches the uninterrupted run would have seen.

TensorFlow is imported after ``training`` (its __init__) has set the CPU flags it needs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from service.preprocess import CropSpec, to_model_input
from training.augment import Augment, augment_batch, context_spec
from training.datasets import (
    LABELS,
    DatasetError,
    Sample,
    age_band,
    assign_splits,
    external_test_archives,
    extract_archive,
    hold_out,
    keep_adults,
    load_extracted,
    load_spec,
)
from training.external import recall_figures
from training.model import build_model
from training.prepare import DEFAULT_CACHE, DEFAULT_SHARED, build_crops, detect_samples, outcome_text

CHECKPOINT_NAME = "best.keras"
LAST_NAME = "last.keras"  # the model and optimizer after the last completed epoch
STATE_NAME = "state.json"
EPOCH_SIZE = 40_000  # faces drawn per epoch by default: the validation loss is checked this often
LOG_NAME = "log.csv"
LOG_COLUMNS = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy", "learning_rate", "seconds",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` beside the checkpoint."""

    data: list[str] = field(default_factory=lambda: ["shared"])
    arch: str = "mini_xception"
    width: float = 1.0  # mini-Xception's filter multiplier
    size: int = 64
    colour: str = "rgb"
    margin: float = 0.25
    square: bool = True
    epochs: int = 18
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 4
    seed: int = 1337
    limit: int | None = None
    cache_dir: str = str(DEFAULT_CACHE)
    shared_dir: str = str(DEFAULT_SHARED)
    detector: str = "blazeface"
    workers: int | None = None
    align: bool = True
    outside: str = "edge"
    augment: dict[str, float] | None = field(default_factory=lambda: Augment().to_dict())
    label_smoothing: float = 0.05
    balance: bool = True  # draw evenly over gender, and more evenly over race x age band, within each source
    epoch_size: int | None = None  # faces drawn per epoch (default: the training split, at most EPOCH_SIZE)
    scale: float = 1.0 / 255.0  # model input = pixel * scale
    template: list[list[float]] | None = None  # the template crop's keypoint places (service.preprocess)
    head: str | None = None  # a pretrained backbone's head (training.transfer): "logistic" or "mlp"

    @property
    def crop_spec(self) -> CropSpec:
        return CropSpec(
            size=self.size,
            colour=self.colour,  # type: ignore[arg-type]
            margin=self.margin,
            square=self.square,
            scale=self.scale,
            align=self.align,
            outside=self.outside,  # type: ignore[arg-type]
            template=None if self.template is None else tuple((x, y) for x, y in self.template),
        )

    @property
    def augmentation(self) -> Augment:
        """The recipe; a run saved without one (``augment: null``) is served its own framing, unchanged."""
        return Augment(**self.augment) if self.augment is not None else Augment.off(self.margin)


@dataclass
class SplitData:
    """The crops and labels of one split."""

    samples: list[Sample]
    x: npt.NDArray[Any]
    y: npt.NDArray[np.int64]

    def counts(self) -> dict[str, int]:
        counter = Counter(int(v) for v in self.y)
        return {label: counter.get(i, 0) for i, label in enumerate(LABELS)}


def load_samples(config: TrainConfig) -> list[Sample]:
    """All samples of the configured data, with fixed splits, children dropped, and every person or
    photo of the external test sets (when the shared folder has them) held out."""
    cache, shared = Path(config.cache_dir), Path(config.shared_dir)
    samples = [s for spec in config.data for s in load_spec(spec, cache, shared)]
    held = [s for archive in external_test_archives(shared) for s in load_extracted(extract_archive(archive, cache))]
    return keep_adults(assign_splits(hold_out(samples, held)))


def load_split_data(
    samples: list[Sample], config: TrainConfig, limit: int | None = None, train_spec: CropSpec | None = None
) -> tuple[dict[str, SplitData], dict[str, Any]]:
    """Detect, crop and scale every sample; return the data per split and a report of what was used.

    Validation and test get the serving crop as float32 model inputs; with ``train_spec``, the train split
    is kept as uint8 crops of that spec (the context crops augmentation draws from)."""
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
        wide = split == "train" and train_spec is not None
        usable, crops = build_crops(chosen, records, train_spec if wide else config.crop_spec, cache)
        y = np.array([s.label for s in usable], dtype=np.int64)
        data[split] = SplitData(usable, crops if wide else to_model_input(crops, config.crop_spec), y)
        report[split] = {
            "images": len(chosen),
            "with_face": len(usable),
            "by_source": dict(Counter(s.source for s in usable)),
        }
    return data, report


def sampling_weights(samples: list[Sample]) -> npt.NDArray[np.float64]:
    """Draw probabilities that balance the genders within each source and, within a source and gender,
    flatten race x age band by the square root of each cell's size; each source keeps its share of faces."""
    cells = [(s.source, s.gender, s.race, age_band(s.age)) for s in samples]
    cell_count = Counter(cells)
    weights = np.array([cell_count[c] ** -0.5 for c in cells])
    by_source_gender: dict[tuple[str, str], float] = {}
    for (source, gender, *_), w in zip(cells, weights, strict=True):
        by_source_gender[(source, gender)] = by_source_gender.get((source, gender), 0.0) + w
    source_size = Counter(s.source for s in samples)
    genders = {src: sum(1 for key in by_source_gender if key[0] == src) for src in source_size}
    for i, (source, gender, *_) in enumerate(cells):
        weights[i] *= source_size[source] / (genders[source] * by_source_gender[(source, gender)])
    return np.asarray(weights / weights.sum())


def epoch_order(count: int, draws: int, seed: int, epoch: int, weights: npt.NDArray[np.float64] | None) -> np.ndarray:
    """The training faces of one epoch, in order: a function of (seed, epoch) only."""
    rng = np.random.default_rng([seed, epoch])
    if weights is None:
        return rng.permutation(count)[:draws] if draws <= count else rng.choice(count, draws, replace=True)
    return rng.choice(count, draws, replace=True, p=weights)


def epoch_dataset(train_set: SplitData, order: np.ndarray, config: TrainConfig, epoch: int) -> tf.data.Dataset:
    """Batches of augmented model inputs and (smoothed) one-hot labels, in ``order``."""
    spec, augment = config.crop_spec, config.augmentation
    size = config.batch_size
    smoothing = config.label_smoothing
    context = train_set.x.shape[1:]

    def batches() -> Any:
        for number, start in enumerate(range(0, len(order), size)):
            index = order[start : start + size]
            yield train_set.x[index], train_set.y[index], np.array([config.seed * 100_003 + epoch, number], np.int64)

    signature = (
        tf.TensorSpec((None, *context), tf.uint8),
        tf.TensorSpec((None,), tf.int64),
        tf.TensorSpec((2,), tf.int64),
    )

    def prepare(x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        target = tf.one_hot(y, len(LABELS)) * (1.0 - smoothing) + smoothing / len(LABELS)
        return augment_batch(x, seed, spec, augment), target

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(len(order) / size)))
    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(4)


class Progress(keras.callbacks.Callback):
    """A progress bar with throughput and the time left in this epoch and (at most) in the run."""

    def __init__(self, epoch: int, epochs: int, batches: int, batch_size: int) -> None:
        super().__init__()
        self.epoch, self.epochs, self.batches, self.batch_size = epoch, epochs, batches, batch_size
        self.tty = sys.stdout.isatty()
        self.started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        done = batch + 1
        # Redrawn every 1% on a terminal; one line every 10% in logs and CI.
        step = max(1, self.batches // (100 if self.tty else 10))
        if done % step and done != self.batches:
            return
        elapsed = time.monotonic() - self.started
        per_batch = elapsed / done
        left = per_batch * (self.batches - done)
        epoch_seconds = per_batch * self.batches
        run_left = left + epoch_seconds * (self.epochs - self.epoch - 1)
        filled = int(30 * done / self.batches)
        line = (
            f"epoch {self.epoch + 1}/{self.epochs} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.batches} "
            f"loss {(logs or {}).get('loss', float('nan')):.4f}  {self.batch_size * done / elapsed:.0f} images/s  "
            f"epoch ETA {_clock(left)}  run ETA {_clock(run_left)} (at most)"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty and done < self.batches else "\n", flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def validation_figures(model: keras.Model, val: SplitData) -> dict[str, float]:
    """Log-loss (without label smoothing), accuracy and balanced accuracy on the serving crops."""
    probs = model.predict(val.x, batch_size=256, verbose=0)
    p = np.clip(probs[np.arange(len(val.y)), val.y], 1e-7, 1.0)
    figures = recall_figures(probs, val.y)
    return {
        "val_loss": float(-np.log(p).mean()),
        "val_accuracy": figures["accuracy"],
        "val_balanced_accuracy": figures["balanced_accuracy"],
    }


@dataclass
class RunState:
    """What a resumed run needs besides the weights and optimizer: saved after every completed epoch."""

    epochs_done: int = 0
    best_val_loss: float = math.inf
    epochs_without_gain: int = 0
    learning_rate: float = 0.0
    seconds: float = 0.0
    images: int = 0
    stopped_early: bool = False

    def save(self, path: Path) -> None:
        _write_atomically(path, json.dumps(asdict(self), indent=2))


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _save_model(model: keras.Model, path: Path) -> None:
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    os.replace(partial, path)


def append_log(path: Path, row: dict[str, float]) -> None:
    new = not path.is_file()
    with path.open("a") as handle:
        if new:
            handle.write(",".join(LOG_COLUMNS) + "\n")
        handle.write(",".join(f"{row[c]:.6g}" if c != "epoch" else str(int(row[c])) for c in LOG_COLUMNS) + "\n")


def _truncate_log(path: Path, epochs: int) -> None:
    """Keep the header and the first ``epochs`` rows: an epoch cut off after its log line is run again."""
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: epochs + 1]))


def train(config: TrainConfig, out_dir: Path, resume: bool = False) -> Path:
    """Run (or, with ``resume``, continue) one training; write the best checkpoint, the last model and
    state, config, data report and CSV log to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, last_path, checkpoint = out_dir / STATE_NAME, out_dir / LAST_NAME, out_dir / CHECKPOINT_NAME
    if resume and not (state_path.is_file() and last_path.is_file()):
        raise DatasetError(f"{out_dir}: no completed epoch to resume from ({STATE_NAME} and {LAST_NAME})")
    if not resume and state_path.is_file():
        raise DatasetError(f"{out_dir} holds a run already; pass --resume {out_dir} to continue it, or a new --out")
    keras.utils.set_random_seed(config.seed)
    samples = load_samples(config)
    spec = config.crop_spec
    data, report = load_split_data(samples, config, config.limit, context_spec(spec, config.augmentation))
    train_set, val_set = data["train"], data["val"]
    print(f"{report['images']} images: {outcome_text(report['status'])} (those without are left out)")
    if not len(train_set.y) or not len(val_set.y):
        raise DatasetError("training needs faces in both the train and the val split; check --data")
    print(f"train {train_set.counts()}  val {val_set.counts()}  (test kept aside: {data['test'].counts()})")
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    (out_dir / "data.json").write_text(json.dumps(report, indent=2))

    if resume:
        state = RunState(**json.loads(state_path.read_text()))
        model = keras.models.load_model(last_path)
        _truncate_log(out_dir / LOG_NAME, state.epochs_done)
        print(f"resuming after epoch {state.epochs_done}, learning rate {state.learning_rate:g}")
    else:
        state = RunState(learning_rate=config.learning_rate)
        model = build_model(config.arch, spec.shape, config.width)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=["accuracy"],
        )
    weights = sampling_weights(train_set.samples) if config.balance else None
    draws = config.epoch_size or min(len(train_set.y), EPOCH_SIZE)
    batches = math.ceil(draws / config.batch_size)
    for epoch in range(state.epochs_done, config.epochs):
        if state.stopped_early:
            break
        keras.utils.set_random_seed(config.seed * 1_000 + epoch)  # layers' own randomness, e.g. dropout
        model.optimizer.learning_rate.assign(state.learning_rate)
        order = epoch_order(len(train_set.y), draws, config.seed, epoch, weights)
        started = time.monotonic()
        history = model.fit(
            epoch_dataset(train_set, order, config, epoch),
            epochs=1,
            shuffle=False,  # the order is the epoch's own, drawn above
            verbose=0,
            callbacks=[Progress(epoch, config.epochs, batches, config.batch_size)],
        )
        seconds = time.monotonic() - started
        figures = validation_figures(model, val_set)
        row = {
            "epoch": epoch,
            "loss": history.history["loss"][-1],
            "accuracy": history.history["accuracy"][-1],
            **figures,
            "learning_rate": state.learning_rate,
            "seconds": seconds,
        }
        improved = figures["val_loss"] < state.best_val_loss
        if improved:
            state.best_val_loss, state.epochs_without_gain = figures["val_loss"], 0
            _save_model(model, checkpoint)
        else:
            state.epochs_without_gain += 1
            if state.epochs_without_gain % max(1, config.patience // 2) == 0:
                state.learning_rate = max(state.learning_rate * 0.5, 1e-5)
        state.stopped_early = state.epochs_without_gain >= config.patience
        state.epochs_done, state.seconds, state.images = epoch + 1, state.seconds + seconds, state.images + draws
        append_log(out_dir / LOG_NAME, row)
        _save_model(model, last_path)
        state.save(state_path)  # last: a run cut off before this line repeats the epoch
        print(
            f"  epoch {epoch + 1}: val loss {figures['val_loss']:.4f}, balanced accuracy "
            f"{100 * figures['val_balanced_accuracy']:.2f}%, {draws / seconds:.0f} images/s"
            + (f"; saved {checkpoint}" if improved else ""),
            flush=True,
        )
    rate = state.images / state.seconds if state.seconds else 0.0
    minutes = state.seconds / 60
    print(f"trained {state.epochs_done} epochs in {minutes:.1f} min ({rate:.0f} images/s); best {checkpoint}")
    return checkpoint
