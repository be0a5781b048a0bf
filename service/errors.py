"""Domain exceptions and the one place that maps them to HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics

log = logging.getLogger("facegender")


class ServiceError(Exception):
    """A request the service refuses, with the status and a message a person can act on."""

    status_code = 400
    kind = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidImage(ServiceError):
    status_code, kind = 400, "invalid_image"


class ImageTooLarge(ServiceError):
    status_code, kind = 413, "too_large"


class UnsupportedMediaType(ServiceError):
    status_code, kind = 415, "unsupported_media_type"


class InvalidParameter(ServiceError):
    status_code, kind = 422, "invalid_parameter"


class NotReady(ServiceError):
    status_code, kind = 503, "not_ready"


class ModelLoadError(RuntimeError):
    """The model or its metadata cannot be used; raised at start-up, never per request."""


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and anything unexpected to ``{"detail": ...}`` JSON."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        metrics.ERRORS.labels(kind=exc.kind).inc()
        # The kind, not the detail: details may quote the client's bytes or file name.
        log.info("refused: %s (%s)", exc.kind, exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.ERRORS.labels(kind="invalid_request").inc()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body')}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code >= 400:
            metrics.ERRORS.labels(kind=f"http_{exc.status_code}").inc()
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        metrics.ERRORS.labels(kind="internal").inc()
        log.exception("unexpected error while serving %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the request id is in the logs"}, status_code=500)
