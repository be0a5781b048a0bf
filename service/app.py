"""The FastAPI application: assembly and the load / warm-up / ready lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import cv2
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from service import __version__, api, metrics
from service.classifier import GenderClassifier
from service.config import Settings
from service.detector import create_detector
from service.errors import install_error_handlers
from service.logs import configure_logging
from service.middleware import STATIC_PREFIX, BodyLimitMiddleware, RequestContextMiddleware
from service.pipeline import Pipeline
from service.security import install_access_control

log = logging.getLogger("facegender")


def load_pipeline(settings: Settings) -> Pipeline:
    """Load the detector and model, failing fast with the offending file named, then warm them up."""
    if settings.opencv_threads:
        cv2.setNumThreads(settings.opencv_threads)
    classifier = GenderClassifier(settings.model, threads=settings.ort_threads, flip_average=settings.flip_average)
    detector = create_detector(
        settings.detector,
        settings.detector_input_size,
        settings.detector_dir,
        settings.detector_copies,
        settings.detector_tile_size,
    )
    pipeline = Pipeline(detector, classifier, settings.detect_max_side, settings.max_pixels)
    pipeline.warm_up()
    return pipeline


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_format, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.READY.set(0)
        pipeline = await run_in_threadpool(load_pipeline, settings)
        classifier = pipeline.classifier
        metrics.MODEL_INFO.labels(name=classifier.name, version=classifier.version, sha256=classifier.sha256).set(1)
        app.state.pipeline = pipeline
        metrics.READY.set(1)
        log.info(
            "ready: model %s %s, flip averaging %s, detector %s",
            classifier.name,
            classifier.version,
            "on" if classifier.flip_average else "off",
            settings.detector,
        )
        yield
        metrics.READY.set(0)
        app.state.pipeline = None

    app = FastAPI(
        title="facegender",
        version=__version__,
        description="Detects every face in an image and returns calibrated apparent-gender probabilities per face.",
        lifespan=lifespan,
        # One schema per model, from its fields: Face's serializer (which leaves out fields not asked for) would
        # otherwise make the response schema of a face a free-form object.
        separate_input_output_schemas=False,
    )
    app.state.settings = settings
    app.state.pipeline = None
    upload_limit = settings.max_bytes + api.MULTIPART_OVERHEAD
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=upload_limit,
        path_limits={"/predict/batch": settings.max_batch_files * upload_limit},
    )
    install_access_control(app, settings)
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.include_router(api.router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=api.STATIC_DIR), name="static")
    return app


app = create_app()
