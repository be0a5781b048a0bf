"""HTTP routes: parse the request, run the pipeline in the thread pool, shape the response."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service import metrics
from service.config import Settings
from service.errors import ImageTooLarge, InvalidParameter, NotReady, ServiceError
from service.pipeline import Pipeline, Prediction, PredictOptions
from service.render import draw_faces, encode_jpeg, overlay_class_maps
from service.schemas import (
    BatchItem,
    BatchResponse,
    ErrorResponse,
    Face,
    FileError,
    ImageSize,
    ModelInfo,
    ModelRef,
    PredictResponse,
    Status,
)

router = APIRouter()

# The demo page and its assets ship inside the package (see pyproject's package data).
STATIC_DIR = Path(__file__).resolve().parent / "static"

# Multipart framing around the file: the streamed body may be this much larger than the image byte limit.
MULTIPART_OVERHEAD = 64 * 1024
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "not a decodable image"),
        (413, "upload or image larger than the configured limits"),
        (415, "an image type the service does not support"),
        (422, "missing image, or a bad query parameter"),
        (503, "model not loaded yet"),
    )
}
# A batch refuses files one by one in its results; the request itself never gets 415.
BATCH_ERRORS = {code: response for code, response in ERRORS.items() if code != 415}
IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}
                    },
                }
            }
        },
    }
}


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline | None = request.app.state.pipeline
    if pipeline is None:
        raise NotReady("the model is still loading; retry shortly")
    return pipeline


def get_options(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    min_face_size: Annotated[
        int | None, Query(ge=1, le=100_000, description="smallest face side in pixels (default 20)")
    ] = None,
    max_faces: Annotated[int | None, Query(ge=1, le=1000, description="most faces reported, largest first")] = None,
    detection_threshold: Annotated[
        float | None, Query(ge=0.0, le=1.0, description="detector cut-off (blazeface, ssd: 0.5; haar: 0)")
    ] = None,
    min_confidence: Annotated[
        float, Query(ge=0.0, le=1.0, description="below this max(P) the label is 'uncertain'; 0 disables")
    ] = 0.0,
    explain: Annotated[
        bool, Query(description="add each face's class activation maps (models with such maps only; else 422)")
    ] = False,
) -> PredictOptions:
    pipeline: Pipeline | None = request.app.state.pipeline
    if explain and pipeline is not None and pipeline.classifier.class_maps_name is None:
        raise InvalidParameter(f"explain=true needs class activation maps; model {pipeline.classifier.name} has none")
    return PredictOptions(
        min_face_size=min_face_size if min_face_size is not None else settings.min_face_size,
        max_faces=max_faces if max_faces is not None else settings.max_faces,
        detection_threshold=detection_threshold if detection_threshold is not None else settings.detection_threshold,
        min_confidence=min_confidence,
        explain=explain,
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    """Read a raw body, stopping as soon as it exceeds ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageTooLarge(f"the upload exceeds the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"{upload.filename or 'the file'} exceeds the {limit:,}-byte limit")
    return data


async def read_image_bytes(request: Request, settings: Settings) -> bytes:
    """The image from a multipart ``image`` field, or a raw body with an image/* Content-Type."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise InvalidParameter("the multipart form has no file field named 'image'")
        return await _read_upload(upload, settings.max_bytes)
    if content_type.startswith(("image/", "application/octet-stream")):
        return await _read_limited(request, settings.max_bytes)
    raise InvalidParameter("send multipart/form-data with a file field 'image', or raw bytes with an image/* type")


def _faces(prediction: Prediction) -> list[Face]:
    return [
        Face.model_validate(
            {
                "box": vars(f.box),
                "detection_score": round(min(max(f.detection_score, 0.0), 1.0), 4),
                "gender": {k: round(v, 4) for k, v in f.probabilities.items()},
                "label": f.label,
                "landmarks": None
                if f.landmarks is None
                else {k: [round(x, 1), round(y, 1)] for k, (x, y) in f.landmarks.items()},
                "cam": None
                if f.cam is None
                else {k: np.round(v.astype(np.float64), 4).tolist() for k, v in f.cam.items()},
            }
        )
        for f in prediction.faces
    ]


def _model_ref(pipeline: Pipeline) -> ModelRef:
    return ModelRef(name=pipeline.classifier.name, version=pipeline.classifier.version)


async def _predict_one(request: Request, settings: Settings, options: PredictOptions) -> tuple[Pipeline, Prediction]:
    """Read the request's image and run the pipeline on it in the thread pool."""
    pipeline = get_pipeline(request)
    data = await read_image_bytes(request, settings)
    return pipeline, await run_in_threadpool(pipeline.predict_bytes, data, options)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra=IMAGE_BODY,
    summary="Detect every face and return calibrated gender probabilities for each",
)
async def predict(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    options: Annotated[PredictOptions, Depends(get_options)],
) -> PredictResponse:
    pipeline, prediction = await _predict_one(request, settings, options)
    return PredictResponse.model_validate(
        {
            "model": _model_ref(pipeline),
            "image": {"width": prediction.image.width, "height": prediction.image.height},
            "faces": _faces(prediction),
            "timings_ms": prediction.timings_ms,
        }
    )


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=BATCH_ERRORS,
    openapi_extra=BATCH_BODY,
    summary="Several images in one request; one bad file never fails the others",
)
async def predict_batch(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    options: Annotated[PredictOptions, Depends(get_options)],
) -> BatchResponse:
    pipeline = get_pipeline(request)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidParameter("send multipart/form-data with one or more file fields named 'images'")
    form = await request.form(max_files=settings.max_batch_files + 1, max_fields=settings.max_batch_files + 10)
    uploads = [u for u in form.getlist("images") if isinstance(u, UploadFile)]
    if not uploads:
        raise InvalidParameter("the multipart form has no file fields named 'images'")
    if len(uploads) > settings.max_batch_files:
        raise InvalidParameter(f"{len(uploads)} files sent; at most {settings.max_batch_files} per request")
    results = []
    for upload in uploads:
        name = upload.filename or ""
        try:
            data = await _read_upload(upload, settings.max_bytes)
            prediction = await run_in_threadpool(pipeline.predict_bytes, data, options)
        except ServiceError as exc:
            metrics.ERRORS.labels(kind=exc.kind).inc()
            results.append(BatchItem(filename=name, error=FileError(status=exc.status_code, detail=exc.detail)))
            continue
        size = ImageSize(width=prediction.image.width, height=prediction.image.height)
        results.append(BatchItem(filename=name, image=size, faces=_faces(prediction)))
    return BatchResponse(model=_model_ref(pipeline), results=results)


@router.post(
    "/annotate",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "the upright image with boxes"}},
    response_class=Response,
    openapi_extra=IMAGE_BODY,
    summary="The upright image as JPEG with each face's box, label and probability drawn on it",
)
async def annotate(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    options: Annotated[PredictOptions, Depends(get_options)],
) -> Response:
    pipeline, prediction = await _predict_one(request, settings, options)

    def render() -> bytes:
        bgr = prediction.image.bgr
        if options.explain:
            bgr = overlay_class_maps(bgr, prediction.faces, pipeline.classifier.spec)
        return encode_jpeg(draw_faces(bgr, prediction.faces))

    jpeg = await run_in_threadpool(render)
    return Response(jpeg, media_type="image/jpeg")


@router.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    """The single-page demo: upload a photo, see the boxes and the raw JSON."""
    return FileResponse(STATIC_DIR / "index.html")


@router.get("/healthz", response_model=Status, summary="200 while the process is alive")
async def healthz() -> Status:
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"model": ErrorResponse}}, summary="200 once ready")
async def readyz(request: Request) -> Status:
    get_pipeline(request)
    return Status(status="ready")


@router.get("/v1/models", response_model=ModelInfo, responses={503: {"model": ErrorResponse}})
async def model_info(request: Request) -> ModelInfo:
    """The loaded model's metadata (name, version, sha256, input, labels, training, evaluation), flip setting."""
    classifier = get_pipeline(request).classifier
    return ModelInfo.model_validate(
        {
            **classifier.metadata,
            "explanations": classifier.class_maps_name is not None,
            "flip_average": classifier.flip_average,
        }
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "every facegender_* metric"}},
    summary="Prometheus text format",
)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
