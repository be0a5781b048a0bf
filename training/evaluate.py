"""Honest figures for a checkpoint: the external sets end to end (with a margin-sensitivity curve), the
held-out test split of every training source, runs trained without a source, calibration, per-group tables,
plots and the model card (Markdown + JSON)."""

from __future__ import annotations

import csv
import itertools
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score

from service.calibration import apply_temperature
from service.detector import create_detector
from service.preprocess import CropSpec
from training.datasets import (
    CONTEXT_SOURCES,
    EXTERNAL_TEST_ARCHIVES,
    LABELS,
    TIGHT_TEST_ARCHIVE,
    DatasetError,
    Sample,
    age_band,
    external_test_archives,
    extract_archive,
    load_extracted,
    population,
)
from training.external import (
    ECE_BINS,
    Predict,
    classify_photos,
    expected_calibration_error,
    photo_figures,
    recall_figures,
)
from training.model import CLASS_MAPS_LAYER, has_class_maps
from training.prepare import DETECTION_PAD
from training.train import CHECKPOINT_NAME, STATE_NAME, SplitData, TrainConfig, load_samples, load_split_data

EXPLANATIONS_DIR = "explanations"
REPORT_DIR = "report"  # beside the checkpoint, unless evaluate is given --out
CARD_NAME = "MODEL_CARD.md"
MIN_GROUP_SIZE = 30
DEFAULT_MARGINS = (0.1, 0.2, 0.3, 0.4)


def fit_temperature(probs: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    """The temperature that minimises negative log-likelihood on (validation) predictions."""

    def nll(t: float) -> float:
        p = apply_temperature(probs, t)[np.arange(len(y)), y]
        return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def classification_figures(probs: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class recall and ROC AUC (male as the positive class)."""
    both = len(set(y.tolist())) == 2
    return {
        "n": len(y),
        **recall_figures(probs, y),
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


def external_sets(
    predict: Predict,
    spec: CropSpec,
    detector: str,
    temperature: float,
    flip: bool,
    config: TrainConfig,
    limit: int | None,
    margins: Sequence[float],
    names: Sequence[str] | None = None,
) -> tuple[list[Scored], dict[str, dict[str, Any]]]:
    """Every shared external test set end to end: whole photos through the service's detector and crop.

    Context-rich sets are scored at every margin of ``margins`` besides the spec's own; the tight set is
    padded with black for detection, as its crops leave the detector no room. Returns, at the spec's margin,
    one Scored per set (a missed face is a confident wrong answer) and per set the figures of every margin.
    ``names`` keeps only those sets.
    """
    cache = Path(config.cache_dir)
    found_detector = create_detector(detector)  # type: ignore[arg-type]
    scored, curves = [], {}
    for archive in external_test_archives(Path(config.shared_dir)):
        name = archive.name.removesuffix(".tar.gz")
        if names is not None and name not in names:
            continue
        samples = load_extracted(extract_archive(archive, cache))
        if limit is not None:
            samples = samples[:: max(1, len(samples) // limit)][:limit]
        tight = name == TIGHT_TEST_ARCHIVE
        asked = [spec.margin] if tight else sorted({spec.margin, *margins})
        crops = {f"{m:g}": replace(spec, margin=m) for m in asked}
        _, raw = classify_photos(
            samples, predict, crops, found_detector, pad=DETECTION_PAD if tight else 0.0, flip=flip
        )
        curves[name] = {margin: photo_figures(samples, r) for margin, r in raw.items()}
        own = raw[f"{spec.margin:g}"]
        y = np.array([s.label for s in samples], dtype=np.int64)
        missed = np.isnan(own[:, 0])
        wrong = np.eye(len(LABELS))[1 - y]
        # A missed face is scored as a confident wrong answer, so misses cannot flatter any figure.
        own_raw = np.where(missed[:, np.newaxis], wrong, own)
        calibrated = np.where(missed[:, np.newaxis], wrong, apply_temperature(np.nan_to_num(own, nan=0.5), temperature))
        scored.append(Scored(f"{name}_end_to_end", list(samples), own_raw.astype(np.float32), calibrated, y))
    return scored, curves


def flip_averaged(predict: Predict, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The mean of the model's probabilities for each face and its mirror image (what the service does)."""
    return np.asarray((predict(x) + predict(x[:, :, ::-1])) / 2.0, np.float32)


def choose_flip(predict: Predict, val_x: npt.NDArray[np.float32], val_y: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Fit a temperature with and without flip-averaging on validation; keep flip-averaging if it lowers
    the calibrated log-loss there."""
    plain = predict(val_x)
    averaged = (plain + predict(val_x[:, :, ::-1])) / 2.0  # flip_averaged, reusing the plain pass
    options = {}
    for flip, raw in ((False, plain), (True, averaged)):
        t = fit_temperature(raw, val_y)
        p = apply_temperature(raw, t)[np.arange(len(val_y)), val_y]
        options[flip] = {"temperature": t, "val_log_loss": float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))}
    flip = options[True]["val_log_loss"] < options[False]["val_log_loss"]
    return {"flip_average": flip, "temperature": options[flip]["temperature"], "options": {
        "plain": options[False], "flip_averaged": options[True]}}  # fmt: skip


def leave_out_figures(
    run_dir: Path, test: SplitData, config: TrainConfig, flip: bool, limit: int | None
) -> dict[str, Any]:
    """A run trained without some sources, scored on every test set drawn from a population it never saw
    (a source's test split, or an external set end to end): its figures there are leave-that-source-out
    figures. They are argmax figures (balanced accuracy, recall), which no temperature changes, so none is fitted."""
    other = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
    spec = config.crop_spec
    if other.crop_spec != spec:
        raise DatasetError(f"{run_dir}: trained with another crop ({other.crop_spec}), not {spec}")
    trained = json.loads((run_dir / "data.json").read_text())["train"]["by_source"]
    seen = {population(source) for source in trained}
    model = keras.models.load_model(run_dir / CHECKPOINT_NAME, compile=False)

    def one_pass(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(model.predict(x, batch_size=256, verbose=0), np.float32)

    def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return flip_averaged(one_pass, x) if flip else one_pass(x)

    state_path = run_dir / STATE_NAME
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    out: dict[str, Any] = {
        "run": run_dir.name,
        "trained_on": sorted(trained),
        "epochs": state.get("epochs_done"),
        "faces_drawn": state.get("images"),
        "sets": {},
    }
    for source in sorted({s.source for s in test.samples}):
        if population(source) not in seen:
            index = np.array([i for i, s in enumerate(test.samples) if s.source == source])
            out["sets"][f"{source}_test"] = classification_figures(
                predict(test.x[index]).astype(np.float64), test.y[index]
            )
    names = [a.name.removesuffix(".tar.gz") for a in external_test_archives(Path(config.shared_dir))]
    unseen = [n for n in names if population(n) not in seen or population(n) == n]
    external, _ = external_sets(predict, spec, config.detector, 1.0, False, config, limit, (), unseen)
    out["sets"].update({item.name: classification_figures(item.raw.astype(np.float64), item.y) for item in external})
    return out


def evaluate_checkpoint(
    checkpoint: Path,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    shared_dir: Path | None = None,
    limit: int | None = None,
    workers: int | None = None,
    explain_photos: list[Path] | None = None,
    margins: Sequence[float] = DEFAULT_MARGINS,
    leave_out: Sequence[Path] = (),
) -> dict[str, Any]:
    """Evaluate a checkpoint; write evaluation.json beside it and the report (card, plots, and explanation
    sheets of ``explain_photos``, which must be free to publish) to ``out_dir``.

    ``leave_out`` names runs trained without some sources; their figures on those sources' test sets fill
    the card's leave-that-source-out column."""
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

    def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(model.predict(x, batch_size=256, verbose=0), np.float32)

    samples = [s for s in load_samples(config) if s.split in ("val", "test")]
    data, report = load_split_data(samples, config, limit)
    val, test = data["val"], data["test"]
    choice = choose_flip(predict, val.x, val.y)
    flip, temperature = choice["flip_average"], choice["temperature"]

    def served(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return flip_averaged(predict, x) if flip else predict(x)

    sets: list[Scored] = []
    external, curves = external_sets(predict, spec, config.detector, temperature, flip, config, limit, margins)
    sets += external
    for source in sorted({s.source for s in test.samples}):
        index = np.array([i for i, s in enumerate(test.samples) if s.source == source])
        raw = served(test.x[index])
        sets.append(
            Scored(
                f"{source}_test",
                [test.samples[i] for i in index],
                raw,
                apply_temperature(raw, temperature),
                test.y[index],
            )
        )

    if not sets:
        raise DatasetError("no test faces to evaluate on: the data's test split is empty or the detector found no face")
    figures = {s.name: s.figures() for s in sets}
    for item in external:
        figures[item.name]["detection_rate"] = curves[item.name.removesuffix("_end_to_end")][f"{spec.margin:g}"][
            "detection_rate"
        ]
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
        "flip_average": flip,
        "sets": figures,
        "margins": curves,
        "leave_out": [leave_out_figures(Path(r), test, config, flip, limit) for r in leave_out],
        "race_gap_balanced_accuracy": race_gaps,
        "ece_all_test_before": expected_calibration_error(pooled.raw.astype(np.float64), pooled.y),
        "ece_all_test_after": expected_calibration_error(pooled.probs, pooled.y),
    }
    result = {
        "checkpoint": checkpoint.name,
        "temperature": temperature,
        "flip_average": flip,
        "flip_choice": choice,
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

    for name, table in list(groups.items())[:1]:  # one plot: the first set with group labels
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
        f"{config.colour}. {_crop_text(config)}",
        f"- Faces found by the `{config.detector}` detector (the service's setting `FACEGENDER_DETECTOR`), cropped by",
        "  `service.preprocess.crop_face`, the same function the service uses.",
        f"- Trained with `{_train_command(config)}`; {_epochs_run(result['log'], config)}",
        f"- Recipe: {_recipe_text(config)}",
        f"- Calibration: temperature {result['temperature']:.3f}, fitted on the validation split by minimising",
        f"  log-loss; the service applies it. {_flip_text(result)}",
        "",
        "## Data (research use only)",
        *_data_lines(run_data, data),
        "",
        "## Results across sources",
        "No figure here was used to choose the model, its crop, its recipe or its temperature (those used the",
        "validation split, which holds faces of every training source). The end-to-end sets are whole photos",
        "through the service's detector and crop; a face the detector misses counts as an error. The last column",
        "is a model trained without that population's data (see below), where one was evaluated.",
        "",
        "| set | kind | n | face found | balanced accuracy | female recall | male recall | ECE | trained without it |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *_cross_source_rows(summary),
        "",
        *_leave_out_lines(summary),
        *_margin_lines(summary, config),
        "## All figures on held-out test data",
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
    lines += [
        "",
        f"Pooled over all test sets, expected calibration error ({ECE_BINS} bins) is "
        f"{_pct(summary['ece_all_test_before'])} before and {_pct(summary['ece_all_test_after'])} "
        "after temperature scaling.",
        "",
        "![confusion matrices](confusion.png) ![reliability](reliability.png)",
        "",
        "## By group (UTKFace test splits, adults; in-domain)",
        "",
        "| set | group | n | balanced accuracy | female recall | male recall |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, table in result["groups"].items():
        for key, fig in table.items():
            lines.append(
                f"| {name} | {key} | {fig['n']} | {_pct(fig['balanced_accuracy'])} | "
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
        "- Faces the detector misses are never classified.",
        "- Probabilities are calibrated on data like the validation split; on very different photos they are not.",
        "",
        f"Figures written by `python -m training evaluate` ({result['machine']}; limit {result['limit']}).",
    ]
    (out_dir / CARD_NAME).write_text("\n".join(lines) + "\n")
    (out_dir / "model_card.json").write_text(json.dumps(result, indent=2) + "\n")


SOURCE_NOTES = {
    "celeba_gender": "loose face crops cut from CelebA photos (tight: the crop runs past them and is filled)",
    "celeba_align_halfres_10k": "CelebA aligned photos with hair, shoulders and background on every side",
    "utkface64": "UTKFace aligned 64x64 faces (tight); no person ids, split by photo",
    "utkface_context": "UTKFace in-the-wild crops with some hair and background, the same photos as utkface64 "
    "(split together by photo)",
    "celeba_wild": "whole CelebA photos with real scenes, one labelled face each; its 298 people are held out of "
    "training and validation in every CelebA source",
    "pixabay_portraits": "hand-sorted Pixabay portraits, children to elderly, many ethnicities: neither CelebA nor "
    "UTKFace",
    "gender_dataset_face": "web-crawled celebrity face crops (tight, padded with black for detection); shares "
    "celebrities with CelebA",
}


def _crop_text(config: TrainConfig) -> str:
    align = " turned upright by the eyes where the detector gives them," if config.align else ""
    outside = "the border's own pixels carried outwards" if config.outside == "edge" else "black"
    return (
        f"Square crop, margin {config.margin} of the face square per side,{align} any part past the photo's "
        f"border filled with {outside}."
    )


def _recipe_text(config: TrainConfig) -> str:
    if config.augment is None:
        return "no augmentation; "
    a = config.augmentation
    parts = [
        f"framing drawn at margins {a.margin_low}-{a.margin_high} with centre jitter {a.shift}",
        f"flip {a.flip}", f"simulated photo border {a.edge}",
        f"brightness {a.brightness}, contrast {a.contrast}, saturation {a.saturation}", f"greyscale {a.greyscale}",
        f"blur {a.blur}", f"JPEG re-compression {a.jpeg}", f"random erasing {a.erase}",
    ]  # fmt: skip
    draws = "gender-balanced draws per source, race x age flattened" if config.balance else "uniform draws"
    return f"{'; '.join(parts)} (per image); label smoothing {config.label_smoothing}; {draws}."


def _flip_text(result: dict[str, Any]) -> str:
    choice = result.get("flip_choice")
    if not choice:
        return ""
    plain, flipped = choice["options"]["plain"], choice["options"]["flip_averaged"]
    verdict = "kept" if choice["flip_average"] else "not kept"
    return (
        f"Flip-averaging (the face and its mirror image) is {verdict}: validation log-loss "
        f"{flipped['val_log_loss']:.4f} with it against {plain['val_log_loss']:.4f} without."
    )


def _data_lines(run_data: dict[str, Any], data: dict[str, Any]) -> list[str]:
    trained = sorted(run_data.get("train", {}).get("by_source", {}))
    lines = [
        "CelebA and UTKFace are licensed for non-commercial research only; the web-crawled and Pixabay photos keep",
        "their owners' rights. CelebA sources are split by person (CelebA identity) jointly, UTKFace copies of one",
        "photo fall together, 80/10/10; children (under 13) are left out of training and of every figure.",
        "",
    ]
    lines += [f"- `{name}` (training): {SOURCE_NOTES.get(name, 'user data')}." for name in trained]
    lines += [
        f"- `{name}` (external test, never trained on): {note}."
        for name, note in SOURCE_NOTES.items()
        if name in EXTERNAL_TEST_ARCHIVES
    ]
    lines += [
        f"- Faces used for training: {_split_counts(run_data, 'train')}; validation: {_split_counts(run_data, 'val')};",
        f"  test: {_split_counts(data, 'test')}. Images where the detector found no face were left out of training",
        "  and of the test-split figures; in the end-to-end sets they count as errors.",
    ]
    return lines


def _cross_source_rows(summary: dict[str, Any]) -> list[str]:
    left_out: dict[str, float | None] = {}
    for run in summary.get("leave_out", []):
        for name, fig in run["sets"].items():
            left_out[name] = fig["balanced_accuracy"]
    rows = []
    ordered = sorted(summary["sets"], key=lambda n: (not n.endswith("_end_to_end"), n))
    for name in ordered:
        fig = summary["sets"][name]
        source = name.removesuffix("_end_to_end").removesuffix("_test")
        end_to_end = name.endswith("_end_to_end")
        context = "context" if source in CONTEXT_SOURCES else "tight crops"
        kind = f"external, {context}" if end_to_end else f"in-domain test split, {context}"
        if population(source) == source:
            without = "never in training"  # no population of the training data: every figure is left out
        elif name in left_out:
            without = _pct(left_out[name])
        else:
            without = "not evaluated"
        found = _pct(fig.get("detection_rate")) if end_to_end else "n/a"
        rows.append(
            f"| {source} | {kind} | {fig['n']} | {found} | **{_pct(fig['balanced_accuracy'])}** | "
            f"{_pct(fig['recall']['female'])} | {_pct(fig['recall']['male'])} | {_pct(fig['ece_after'])} | {without} |"
        )
    return rows


def _leave_out_lines(summary: dict[str, Any]) -> list[str]:
    runs = summary.get("leave_out", [])
    if not runs:
        return [
            "No model trained without a source was evaluated with this one (`evaluate --leave-out RUNDIR`).",
            "",
        ]
    lines = ["Models trained without a population, evaluated on the sets of the population they never saw:", ""]
    for run in runs:
        sets = ", ".join(f"{k} {_pct(v['balanced_accuracy'])}" for k, v in run["sets"].items())
        length = f" for {run['epochs']} epochs ({run['faces_drawn']:,} faces drawn)" if run.get("epochs") else ""
        lines.append(f"- `{run['run']}`, trained on {', '.join(run['trained_on'])}{length}: {sets}.")
    return [*lines, ""]


def _margin_lines(summary: dict[str, Any], config: TrainConfig) -> list[str]:
    curves = {k: v for k, v in summary.get("margins", {}).items() if len(v) > 1}
    if not curves:
        return []
    margins = sorted({m for curve in curves.values() for m in curve}, key=float)
    lines = [
        "### Margin sensitivity",
        f"Balanced accuracy end to end at other crop margins (the model's own is {config.margin}):",
        "",
        f"| set | {' | '.join(margins)} | spread over 0.1-0.4 |",
        f"| --- | {' | '.join('---' for _ in margins)} | --- |",
    ]
    for name, curve in curves.items():
        values = [curve[m]["balanced_accuracy"] for m in margins]
        inside = [curve[m]["balanced_accuracy"] for m in margins if 0.1 <= float(m) <= 0.4]
        spread = f"{100 * (max(inside) - min(inside)):.1f} points" if inside else "n/a"
        lines.append(f"| {name} | {' | '.join(_pct(v) for v in values)} | {spread} |")
    return [*lines, ""]


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
    options = [
        f"--arch {config.arch}", f"--width {config.width:g}" if config.width != 1.0 else "",
        f"--size {config.size}", f"--colour {config.colour}", f"--margin {config.margin}",
        "" if config.align else "--no-align", f"--outside {config.outside}", "" if config.augment else "--no-augment",
        f"--label-smoothing {config.label_smoothing}", "" if config.balance else "--no-balance",
        f"--epoch-size {config.epoch_size}" if config.epoch_size else "", f"--epochs {config.epochs}",
        f"--batch-size {config.batch_size}", f"--patience {config.patience}", f"--seed {config.seed}",
    ]  # fmt: skip
    return f"python -m training train {data} {' '.join(o for o in options if o)} --out RUNDIR"


__all__ = ["evaluate_checkpoint"]
