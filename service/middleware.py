"""ASGI middleware: request ids, in-flight gauge, request counts and durations; the streamed body limit."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import ImageTooLarge
from service.logs import REQUEST_ID

log = logging.getLogger("facegender")

# Every path the app serves is its own route label, so "other" means an unknown path; the static files are one.
KNOWN_ROUTES = (
    "/predict", "/predict/batch", "/annotate", "/healthz", "/readyz", "/v1/models", "/metrics",
    "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
)  # fmt: skip
STATIC_PREFIX = "/static"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_label(path: str) -> str:
    """The metrics and log label of a request path: a known route, ``/static``, or ``other``."""
    if path in KNOWN_ROUTES:
        return path
    return STATIC_PREFIX if path.startswith(f"{STATIC_PREFIX}/") else "other"


class RequestContextMiddleware:
    """Echo or mint X-Request-ID, and record every request in the metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        path = scope.get("path", "")
        route = route_label(path)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.REQUESTS.labels(route=route, status=metrics.status_class(status)).inc()
            seconds = time.perf_counter() - started
            metrics.REQUEST_DURATION.labels(route=route).observe(seconds)
            # Our access line: method, known route, status and time only; no client address, query or body.
            log.info("%s %s %d %.1f ms", scope.get("method", "-"), route, status, seconds * 1000)
            REQUEST_ID.reset(token)


class BodyLimitMiddleware:
    """413 for a body over its path's limit: by Content-Length before reading, else as soon as the streamed
    count passes it (``receive`` raises ``ImageTooLarge``), so no route ever buffers more than the limit."""

    def __init__(self, app: ASGIApp, default_limit: int, path_limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.path_limits = path_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.default_limit)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            metrics.ERRORS.labels(kind=ImageTooLarge.kind).inc()
            detail = f"the request body is {int(declared):,} bytes; the limit is {limit:,}"
            await JSONResponse({"detail": detail}, status_code=ImageTooLarge.status_code)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ImageTooLarge(f"the request body exceeds the {limit:,}-byte limit")
            return message

        await self.app(scope, counted_receive, send)
