"""Command line: ``python -m training {prepare,train,sweep,evaluate,export,explain}``."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from service.detector import BACKENDS
from training.datasets import CSV_OPTIONAL, CSV_REQUIRED, SPEC_FORMATS, DatasetError
from training.prepare import DEFAULT_CACHE, DEFAULT_SHARED

if TYPE_CHECKING:
    from training.train import TrainConfig

DATA_HELP = (
    "training data as FORMAT:PATH, repeatable. Formats: folder:DIR (male/ and female/ or man/ and woman/), "
    f"csv:FILE (columns {', '.join(CSV_REQUIRED)}, optionally {', '.join(CSV_OPTIONAL)}), utkface:DIR, "
    "celeba:DIR (list_attr_celeba.csv, "
    "list_eval_partition.csv, img_align_celeba/), imdb:MAT or wiki:MAT (IMDB-WIKI metadata), "
    "archive:FILE.tar.gz, or 'shared' for the shared archives (default)"
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="extracted data and crop cache (%(default)s)"
    )
    parser.add_argument(
        "--shared-dir", type=Path, default=DEFAULT_SHARED, help="folder of the shared archives (%(default)s)"
    )
    parser.add_argument("--workers", type=int, default=None, help="detector processes (default: one per core)")
    parser.add_argument(
        "--detector", default="blazeface", choices=BACKENDS, help="face detector, as the service's (%(default)s)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="extract the shared archives and detect every face once")
    _add_common(prepare)

    train = commands.add_parser("train", help="train a model; writes RUNDIR/best.keras")
    train.add_argument("--data", action="append", metavar="FORMAT:PATH", help=DATA_HELP)
    train.add_argument("--arch", default="mini_xception", choices=("mini_xception", "plain_cnn", "mobilenet_v2"))
    train.add_argument("--size", type=int, default=64, help="input side in pixels (%(default)s)")
    train.add_argument("--colour", default="rgb", choices=("rgb", "grey"))
    train.add_argument(
        "--margin", type=float, default=0.2, help="crop margin per side, fraction of the box (%(default)s)"
    )
    train.add_argument(
        "--align", action="store_true", help="crop upright by the eyes (needs a detector with landmarks)"
    )
    train.add_argument(
        "--epochs", type=int, default=15, help="%(default)s: about 85 min on 2 CPU cores for the shared data"
    )
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--learning-rate", type=float, default=2e-3)
    train.add_argument("--patience", type=int, default=5, help="epochs without val improvement before stopping")
    train.add_argument("--seed", type=int, default=1337)
    train.add_argument("--limit", type=int, default=None, help="use at most N images per split (quick runs)")
    train.add_argument("--out", type=Path, required=True, metavar="RUNDIR")
    _add_common(train)

    sweep = commands.add_parser("sweep", help="short trainings over crop margins and input formats, scored on val")
    sweep.add_argument("--data", action="append", metavar="FORMAT:PATH", help=DATA_HELP)
    sweep.add_argument("--arch", default="mini_xception", choices=("mini_xception", "plain_cnn", "mobilenet_v2"))
    sweep.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    sweep.add_argument("--colours", nargs="+", default=["rgb"], choices=("rgb", "grey"))
    sweep.add_argument("--sizes", type=int, nargs="+", default=[64])
    sweep.add_argument("--box", action="store_true", help="also try the detector box's own aspect (not square)")
    sweep.add_argument("--epochs", type=int, default=4)
    sweep.add_argument("--limit", type=int, default=12000, help="images per split (%(default)s)")
    sweep.add_argument("--seed", type=int, default=1337)
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR")
    _add_common(sweep)

    evaluate = commands.add_parser("evaluate", help="figures, plots and the model card for a checkpoint")
    evaluate.add_argument("checkpoint", type=Path, help="a .keras checkpoint written by train")
    evaluate.add_argument("--out", type=Path, default=None, help="report folder (default: beside the checkpoint)")
    evaluate.add_argument("--limit", type=int, default=None, help="use at most N images per split (quick runs)")
    evaluate.add_argument(
        "--explain",
        type=Path,
        nargs="+",
        default=None,
        metavar="PHOTO",
        help="put explanation sheets of these photos in the card (only photos free to publish)",
    )
    _add_common(evaluate)

    export = commands.add_parser("export", help="convert a checkpoint to ONNX plus its metadata JSON")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, required=True, metavar="FILE.onnx")
    export.add_argument("--name", default=None, help="model name in the metadata (default: gender-<arch>)")
    export.add_argument("--version", default=None, help="model version (default: today's date)")
    export.add_argument("--opset", type=int, default=17)
    _add_common(export)

    explain = commands.add_parser("explain", help="Grad-CAM and guided-backprop sheets, one PNG per face")
    explain.add_argument("checkpoint", type=Path, help="a .keras checkpoint written by train")
    explain.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="photos; every face found is explained")
    explain.add_argument("--out", type=Path, required=True, metavar="DIR")
    explain.add_argument(
        "--from-split",
        choices=("train", "val", "test"),
        default=None,
        help="instead of photos: the first N correct and N wrong faces of this split of the checkpoint's data",
    )
    explain.add_argument("--seed", type=int, default=0, help="fixes the order the split's faces are taken in")
    explain.add_argument("-n", type=int, default=4, help="faces of each kind with --from-split (%(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except DatasetError as exc:  # data that is missing or not as its format promises: the user's to fix
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "prepare":
        return _prepare(args)
    if args.command == "train":
        return _train(args)
    if args.command == "sweep":
        from training.sweep import sweep

        if not _data_ok(args):
            return 2
        base = _train_config(args, patience=args.epochs)
        sweep(base, args.out, args.margins, args.colours, args.sizes, [True, False] if args.box else [True])
        return 0
    if args.command == "evaluate":
        from training.evaluate import evaluate_checkpoint

        evaluate_checkpoint(
            args.checkpoint, args.out, args.cache_dir, args.shared_dir, args.limit, args.workers, args.explain
        )
        return 0
    if args.command == "explain":
        return _explain(args)
    from training.export import export_checkpoint

    export_checkpoint(args.checkpoint, args.out, name=args.name, version=args.version, opset=args.opset)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from training.datasets import load_extracted
    from training.prepare import detect_samples, extract_archives, outcome_text

    for folder in extract_archives(args.shared_dir, args.cache_dir):
        samples = load_extracted(folder)
        records = detect_samples(samples, args.cache_dir, args.detector, workers=args.workers)
        status = Counter(records[str(s.path)].status for s in samples)
        print(f"{folder.name}: {len(samples)} images, {outcome_text(status)} (those without are left out)")
    return 0


def _data_ok(args: argparse.Namespace) -> bool:
    for spec in args.data or []:
        if spec != "shared" and spec.partition(":")[0] not in SPEC_FORMATS:
            print(f"error: --data {spec!r}: {DATA_HELP}", file=sys.stderr)
            return False
    return True


def _train_config(args: argparse.Namespace, **overrides: object) -> TrainConfig:
    """A TrainConfig from the parsed options that share a name with its fields."""
    from training.train import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    given["data"] = args.data or ["shared"]
    given["cache_dir"], given["shared_dir"] = str(args.cache_dir), str(args.shared_dir)
    return TrainConfig(**{**given, **overrides})


def _train(args: argparse.Namespace) -> int:
    from training.train import train

    if not _data_ok(args):
        return 2
    train(_train_config(args), args.out)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from training.explain import explain_images, explain_split

    if bool(args.images) == bool(args.from_split):
        print("error: explain takes either IMAGE paths or --from-split, not both or neither", file=sys.stderr)
        return 2
    if args.from_split:
        explain_split(args.checkpoint, args.from_split, args.seed, args.n, args.out)
    else:
        explain_images(args.checkpoint, args.images, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
