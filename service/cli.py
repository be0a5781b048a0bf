"""The ``facegender`` command: ``serve`` starts the HTTP service, ``predict`` runs the pipeline locally."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.config import Settings


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        import uvicorn

        uvicorn.run("service.app:app", host=args.host, port=args.port, workers=args.workers, log_config=None)
        return 0
    return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    from service.app import load_pipeline
    from service.errors import ServiceError
    from service.pipeline import PredictOptions

    settings = Settings()
    pipeline = load_pipeline(settings)
    options = PredictOptions(
        min_face_size=args.min_face_size or settings.min_face_size,
        max_faces=settings.max_faces,
        detection_threshold=settings.detection_threshold,
        min_confidence=args.min_confidence,
    )
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


if __name__ == "__main__":
    sys.exit(main())
