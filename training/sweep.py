"""Compare crop framings and input formats by short trainings scored on the validation split."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.train import TrainConfig, train


def best_val_accuracy(run_dir: Path) -> float:
    with (run_dir / "log.csv").open(newline="") as handle:
        return max(float(row["val_accuracy"]) for row in csv.DictReader(handle))


def sweep(
    base: TrainConfig, out_dir: Path, margins: list[float], colours: list[str], sizes: list[int], squares: list[bool]
) -> list[dict[str, Any]]:
    """Train one short run per combination; write and return a table of best validation accuracy."""
    rows = []
    for margin, colour, size, square in itertools.product(margins, colours, sizes, squares):
        config = replace(base, margin=margin, colour=colour, size=size, square=square)
        run_dir = out_dir / f"m{margin}-{colour}-{size}-{'square' if square else 'box'}"
        train(config, run_dir)
        rows.append(
            {
                "margin": margin,
                "colour": colour,
                "size": size,
                "square": square,
                "best_val_accuracy": best_val_accuracy(run_dir),
            }
        )
        (out_dir / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    for row in sorted(rows, key=lambda r: -r["best_val_accuracy"]):
        print(
            f"margin {row['margin']:<5} {row['colour']:<5} {row['size']:>3}px "
            f"{'square' if row['square'] else 'box   '}  val accuracy {100 * row['best_val_accuracy']:.2f}%"
        )
    return rows
