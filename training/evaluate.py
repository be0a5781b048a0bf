"""Honest figures for a checkpoint: held-out test splits, an external end-to-end set, calibration,
per-group tables, plots and the model card (Markdown + JSON)."""

from __future__ import annotations

import csv
import itertools
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score

from service.calibration import apply_temperature
from service.preprocess import CropSpec, to_model_input
from training.datasets import (
    LABELS,
    TIGHT_TEST_ARCHIVE,
    DatasetError,
    Sample,
    age_band,
    extract_archive,
    load_extracted,
)
from training.model import CLASS_MAPS_LAYER, has_class_maps
from training.prepare import build_crops, detect_samples
from training.train import TrainConfig, load_samples, load_split_data

ECE_BINS = 15
EXPLANATIONS_DIR = "explanations"
REPORT_DIR = "report"  # beside the checkpoint, unless evaluate is given --out
CARD_NAME = "MODEL_CARD.md"
MIN_GROUP_SIZE = 30


def fit_temperature(probs: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    """The temperature that minimises negative log-likelihood on (validation) predictions."""

    def nll(t: float) -> float:
        p = apply_temperature(probs, t)[np.arange(len(y)), y]
        return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def expected_calibration_error(probs: npt.NDArray[np.float64], y: npt.NDArray[np.int64], bins: int = ECE_BINS) -> float:
    """ECE over equal-width confidence bins of max(p)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_figures(probs: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class recall and ROC AUC (male as the positive class)."""
    pred = probs.argmax(axis=1)
    recall = {label: float((pred[y == i] == i).mean()) if (y == i).any() else None for i, label in enumerate(LABELS)}
    present = [r for r in recall.values() if r is not None]
    both = len(set(y.tolist())) == 2
    return {
        "n": len(y),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "recall": recall,
        "roc_auc": float(roc_auc_score(y, probs[:, 1])) if both else None,
    }


@dataclass
class Scored:
    """Calibrated predictions for one evaluation set."""

    name: str
    samples: list[Sample]
    raw: npt.NDArray[np.float32]
    probs: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64]

    def figures(self) -> dict[str, Any]:
        out = classification_figures(self.probs, self.y)
        out["ece_before"] = expected_calibration_error(self.raw.astype(np.float64), self.y)
        out["ece_after"] = expected_calibration_error(self.probs, self.y)
        return out


def group_table(scored: Scored) -> dict[str, dict[str, Any]]:
    """Balanced accuracy per race and per age band (UTKFace labels), for groups of 30 or more faces."""
    groups: dict[str, list[int]] = {}
    for i, sample in enumerate(scored.samples):
        if sample.race:
            groups.setdefault(f"race:{sample.race}", []).append(i)
        band = age_band(sample.age)
        if band is not None:
            groups.setdefault(f"age:{band}", []).append(i)
    table = {}
    for key in sorted(groups):
        index = np.array(groups[key])
        if len(index) >= MIN_GROUP_SIZE:
            table[key] = classification_figures(scored.probs[index], scored.y[index])
    return table


def end_to_end_external(
    model: keras.Model, spec: CropSpec, temperature: float, cache_dir: Path, shared_dir: Path, limit: int | None
) -> tuple[Scored, dict[str, int]]:
    """The external set through detector + crop + model; images where no face is found count as errors."""
    archive = shared_dir / f"{TIGHT_TEST_ARCHIVE}.tar.gz"
    samples = load_extracted(extract_archive(archive, cache_dir))
    if limit is not None:
        samples = samples[:: max(1, len(samples) // limit)][:limit]
    records = detect_samples(samples, cache_dir)
    found, crops = build_crops(samples, records, spec, cache_dir)
    raw = model.predict(to_model_input(crops, spec), batch_size=256, verbose=0)
    # A missed face is scored as a confident wrong answer, so misses cannot flatter the figure.
    missed = [s for s in samples if records[str(s.path)].box is None]
    wrong = np.array([[0.0, 1.0] if s.label == 0 else [1.0, 0.0] for s in missed], dtype=np.float32).reshape(-1, 2)
    all_raw = np.concatenate([raw, wrong])
    all_probs = np.concatenate([apply_temperature(raw, temperature), wrong.astype(np.float64)])
    y = np.array([s.label for s in found + missed], dtype=np.int64)
    coverage = {"images": len(samples), "faces_found": len(found), "no_face": len(missed)}
    return Scored("external_end_to_end", found + missed, all_raw, all_probs, y), coverage


def evaluate_checkpoint(
    checkpoint: Path,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    shared_dir: Path | None = None,
    limit: int | None = None,
    workers: int | None = None,
    explain_photos: list[Path] | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint; write evaluation.json beside it and the report (card, plots, and explanation
    sheets of ``explain_photos``, which must be free to publish) to ``out_dir``."""
    run_dir = checkpoint.parent
    out_dir = out_dir or run_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
    if cache_dir is not None:
        config.cache_dir = str(cache_dir)
    if shared_dir is not None:
        config.shared_dir = str(shared_dir)
    config.workers = workers
    spec = config.crop_spec
    model = keras.models.load_model(checkpoint, compile=False)

    samples = [s for s in load_samples(config) if s.split in ("val", "test")]
    data, report = load_split_data(samples, config, limit)
    val, test = data["val"], data["test"]
    val_raw = model.predict(val.x, batch_size=256, verbose=0)
    temperature = fit_temperature(val_raw, val.y)

    sets: list[Scored] = []
    for source in sorted({s.source for s in test.samples}):
        index = np.array([i for i, s in enumerate(test.samples) if s.source == source])
        raw = model.predict(test.x[index], batch_size=256, verbose=0)
        sets.append(
            Scored(
                f"{source}_test",
                [test.samples[i] for i in index],
                raw,
                apply_temperature(raw, temperature),
                test.y[index],
            )
        )
    coverage: dict[str, int] = {}
    external = Path(config.shared_dir) / f"{TIGHT_TEST_ARCHIVE}.tar.gz"
    if external.is_file():
        scored, coverage = end_to_end_external(
            model, spec, temperature, Path(config.cache_dir), Path(config.shared_dir), limit
        )
        sets.append(scored)

    if not sets:
        raise DatasetError("no test faces to evaluate on: the data's test split is empty or the detector found no face")
    figures = {s.name: s.figures() for s in sets}
    groups = {s.name: group_table(s) for s in sets if any(x.race for x in s.samples)}
    race_gaps = {
        name: _gap([v["balanced_accuracy"] for k, v in table.items() if k.startswith("race:")])
        for name, table in groups.items()
    }
    pooled = Scored(
        "all_test",
        [],
        np.concatenate([s.raw for s in sets]),
        np.concatenate([s.probs for s in sets]),
        np.concatenate([s.y for s in sets]),
    )
    summary = {
        "temperature": temperature,
        "sets": figures,
        "race_gap_balanced_accuracy": race_gaps,
        "ece_all_test_before": expected_calibration_error(pooled.raw.astype(np.float64), pooled.y),
        "ece_all_test_after": expected_calibration_error(pooled.probs, pooled.y),
        "external_coverage": coverage,
    }
    result = {
        "checkpoint": checkpoint.name,
        "temperature": temperature,
        "summary": summary,
        "groups": groups,
        "data": report,
        "limit": limit,
        "log": _read_log(run_dir / "log.csv"),
        "machine": f"{platform.machine()} {platform.system()} python {platform.python_version()}",
    }
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    _plots(sets, pooled, groups, out_dir)
    if explain_photos:
        from training.explain import explain_images  # it reads the temperature just written

        explain_images(checkpoint, explain_photos, out_dir / EXPLANATIONS_DIR)
    _write_card(result, config, model, out_dir, run_dir)
    print(json.dumps(summary, indent=2))
    return result


def _gap(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(max(present) - min(present)) if len(present) >= 2 else None


def _plots(sets: list[Scored], pooled: Scored, groups: dict[str, dict[str, Any]], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.4), squeeze=False)
    for ax, scored in zip(axes[0], sets, strict=True):
        matrix = np.zeros((2, 2), dtype=int)
        for t, p in zip(scored.y, scored.probs.argmax(axis=1), strict=True):
            matrix[t, p] += 1
        ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", color="black")
        ax.set_xticks([0, 1], LABELS)
        ax.set_yticks([0, 1], LABELS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(scored.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for probs, label in ((pooled.raw.astype(np.float64), "before"), (pooled.probs, "after temperature")):
        conf, correct = probs.max(axis=1), probs.argmax(axis=1) == pooled.y
        xs, ys = [], []
        for low, high in itertools.pairwise(edges):
            inside = (conf > low) & (conf <= high)
            if inside.sum() >= 10:
                xs.append(conf[inside].mean())
                ys.append(correct[inside].mean())
        ax.plot(xs, ys, marker="o", label=label)
    ax.plot([0.5, 1], [0.5, 1], "k--", linewidth=1, label="perfect")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability, all test sets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "reliability.png", dpi=110)
    plt.close(fig)

    for name, table in groups.items():
        keys = list(table)
        fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(keys)), 3.6))
        values = [100 * (table[k]["balanced_accuracy"] or 0) for k in keys]
        ax.bar(range(len(keys)), values, color=["tab:blue" if k.startswith("race") else "tab:orange" for k in keys])
        ax.set_xticks(range(len(keys)), [f"{k.split(':')[1]}\n(n={table[k]['n']})" for k in keys], fontsize=7)
        ax.set_ylim(min(values) - 5, 100)
        ax.set_ylabel("balanced accuracy %")
        ax.set_title(f"{name}: by race (blue) and age band (orange)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / "groups.png", dpi=110)
        plt.close(fig)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _auc(value: float | None) -> str:
    """ROC AUC to 4 decimals; n/a for a set that holds one class only, where it is undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def _split_counts(report: dict[str, Any], split: str) -> str:
    entry = report.get(split)
    if not entry:
        return "n/a"
    sources = ", ".join(f"{k} {v}" for k, v in sorted(entry["by_source"].items()))
    return f"{entry['with_face']} ({sources})"


def _write_card(result: dict[str, Any], config: TrainConfig, model: keras.Model, out_dir: Path, run_dir: Path) -> None:
    summary = result["summary"]
    data = result["data"]
    data_path = run_dir / "data.json"
    run_data = json.loads(data_path.read_text()) if data_path.is_file() else {}
    lines = [
        f"# Model card: {model.name}",
        "",
        "Predicts the **apparent binary gender** (female / male) of a face from its appearance in one photo. It does",
        "not identify anyone, does not know a person's gender identity, and has no label for people who are",
        "neither or both. Use it for aggregate statistics and user-facing features that tolerate errors; do not",
        "use it to make decisions about individuals.",
        "",
        "## Model",
        f"- Architecture: `{config.arch}`, {model.count_params():,} parameters; input {config.size}x{config.size} "
        f"{config.colour}, square crop with margin {config.margin} of the detector box per side.",
        "- Faces found by OpenCV's res10 SSD detector (the service's default), cropped by",
        "  `service.preprocess.crop_face`, the same function the service uses.",
        f"- Trained with `{_train_command(config)}` (seed {config.seed}); {_epochs_run(result['log'], config)}",
        f"- Calibration: temperature {result['temperature']:.3f}, fitted on the validation split by",
        "  minimising log-loss; the service applies it.",
        "",
        "## Data (research use only)",
        "- CelebA (`celeba_gender`): loose crops of CelebA photos; split **by person** (CelebA identity) 80/10/10.",
        "  CelebA is licensed for non-commercial research only.",
        "- UTKFace (`utkface64`): aligned 64x64 faces, ages 13 and over only (children excluded from training and",
        "  figures); no person ids exist, so the 80/10/10 split is by file and the same person may appear on both",
        "  sides: the UTKFace test figures are optimistic. Non-commercial research only.",
        "- `gender_dataset_face`: web-crawled celebrity faces, never used in training or selection; an external",
        "  end-to-end test. It shares celebrities with CelebA, so it is optimistic too. Its owners keep copyright.",
        f"- Faces used for training: {_split_counts(run_data, 'train')}; validation: {_split_counts(run_data, 'val')};",
        f"  test: {_split_counts(data, 'test')}. Of the {data['images']} validation and test images, the detector",
        f"  outcome was {data['status']}. Images where the detector found no face were left out of training and",
        "  of the CelebA/UTKFace test figures; in the external set they count as errors.",
        "",
        "## Results on held-out test data",
        "No figure below was used to choose the model, its crop or its temperature (those used the validation split).",
        "",
        "| set | n | accuracy | balanced accuracy | female recall | male recall | ROC AUC | ECE before | ECE after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, fig in summary["sets"].items():
        lines.append(
            f"| {name} | {fig['n']} | {_pct(fig['accuracy'])} | {_pct(fig['balanced_accuracy'])} | "
            f"{_pct(fig['recall']['female'])} | {_pct(fig['recall']['male'])} | "
            f"{_auc(fig['roc_auc'])} | {_pct(fig['ece_before'])} | {_pct(fig['ece_after'])} |"
        )
    coverage = summary["external_coverage"]
    if coverage:
        lines += [
            "",
            f"External set: the detector found a face in {coverage['faces_found']} of {coverage['images']} "
            "images (each image padded with a 30% black border first, as in training, since these images are "
            "already tight crops); the rest count as wrong answers above.",
        ]
    lines += [
        "",
        f"Pooled over all test sets, expected calibration error ({ECE_BINS} bins) is "
        f"{_pct(summary['ece_all_test_before'])} before and {_pct(summary['ece_all_test_after'])} "
        "after temperature scaling.",
        "",
        "![confusion matrices](confusion.png) ![reliability](reliability.png)",
        "",
        "## By group (UTKFace test, adults)",
        "",
        "| group | n | balanced accuracy | female recall | male recall |",
        "| --- | --- | --- | --- | --- |",
    ]
    for table in result["groups"].values():
        for key, fig in table.items():
            lines.append(
                f"| {key} | {fig['n']} | {_pct(fig['balanced_accuracy'])} | "
                f"{_pct(fig['recall']['female'])} | {_pct(fig['recall']['male'])} |"
            )
    for name, gap in summary["race_gap_balanced_accuracy"].items():
        lines.append(
            f"\nLargest gap in balanced accuracy between races on {name}: "
            f"{'n/a' if gap is None else f'{100 * gap:.1f} points'}."
        )
    lines += [
        "",
        "![groups](groups.png)",
        "",
        *_explanations_section(model, out_dir / EXPLANATIONS_DIR),
        "## Limitations",
        "- Binary labels from the datasets' annotators; appearance, not identity. Expect more errors on children",
        "  (not evaluated), profile faces, heavy makeup or occlusion, low light, and groups that are rare in",
        "  CelebA and UTKFace.",
        "- Faces the detector misses are never classified; res10 misses faces that fill the whole frame.",
        "- Probabilities are calibrated on data like the validation split; on very different photos they are not.",
        "",
        f"Figures written by `python -m training evaluate` ({result['machine']}; limit {result['limit']}).",
    ]
    (out_dir / CARD_NAME).write_text("\n".join(lines) + "\n")
    (out_dir / "model_card.json").write_text(json.dumps(result, indent=2) + "\n")


def _explanations_section(model: keras.Model, folder: Path) -> list[str]:
    """What the explanations are, the sheets ``python -m training explain`` wrote into the report, and how to get
    sheets for test faces (those stay out of the card: the datasets' licences allow only aggregate figures)."""
    lines = ["## Explanations", ""]
    if has_class_maps(model):
        rows, columns, _ = model.get_layer(CLASS_MAPS_LAYER).output.shape[1:]
        lines += [
            "The model ends in a convolution to one map per label and global average pooling, so its maps before",
            "pooling are class activation maps: the mean of a label's map is that label's logit. The ONNX model",
            f"returns them as a second output; the service sends them with `explain=true` ({rows}x{columns} per label)",
            "and draws the predicted label's map over each face with `/annotate?explain=true`.",
            "",
        ]
    lines += [
        "`python -m training explain CHECKPOINT PHOTO... --out DIR` finds faces with the serving detector and crop",
        "and draws one sheet per face: the crop the model sees; Grad-CAM for the predicted label (its logit's",
        "gradients over the last feature maps); the class map, when the model has them; guided backpropagation",
        "(the input gradient, passing only positive gradients through positive ReLU inputs); guided Grad-CAM",
        "(their product). Heat maps run from each face's minimum (blue) to its maximum (red): they show where the",
        "evidence lies, not how strong it is.",
        "",
    ]
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    if index.get("sheets"):
        photos = " ".join(index["images"])
        lines += [
            f"Sheets for the photos `{photos}` (`python -m training evaluate CHECKPOINT --explain {photos}`):",
            "",
        ]
        lines += [f"![{entry['face']}]({EXPLANATIONS_DIR}/{entry['sheet']})" for entry in index["sheets"]]
        lines.append("")
    lines += [
        "Sheets of test faces are not in this card: CelebA and UTKFace allow non-commercial research use only, and",
        "nothing derived from them but weights and aggregate figures is published. To see them, run",
        "`python -m training explain RUNDIR/best.keras --from-split test --seed 0 -n 4 --out RUNDIR/explanations`:",
        "it explains the first 4 correctly and 4 wrongly classified test faces in an order fixed by the seed alone,",
        "so the cases are not picked after looking at them, and lists them in `index.json`.",
        "",
    ]
    return lines


def _read_log(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _epochs_run(log: list[dict[str, float]], config: TrainConfig) -> str:
    """Say how many epochs really ran, and which one the checkpoint (lowest val loss) comes from."""
    if not log:
        return "no training log was found."
    best = min(log, key=lambda row: row["val_loss"])
    ran = len(log)
    stopped = (
        ""
        if ran == config.epochs
        else (
            f" of the {config.epochs} asked for (early stopping, or stopped by hand: `--epochs {ran}` gives the "
            "same run, since no schedule depends on the total)"
        )
    )
    return (
        f"{ran} epochs ran{stopped}; the checkpoint is epoch {int(best['epoch']) + 1}, lowest validation loss "
        f"{best['val_loss']:.4f} (validation accuracy {100 * best['val_accuracy']:.2f}%)."
    )


def _train_command(config: TrainConfig) -> str:
    data = " ".join(f"--data {d}" for d in config.data)
    return (
        f"python -m training train {data} --arch {config.arch} --size {config.size} --colour {config.colour} "
        f"--margin {config.margin} --epochs {config.epochs} --seed {config.seed} --out RUNDIR"
    )


__all__ = ["evaluate_checkpoint"]
