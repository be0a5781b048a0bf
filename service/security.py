"""Access control: the optional API key (X-API-Key, constant-time compare), its OpenAPI scheme, and CORS."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.config import Settings

API_KEY_HEADER = "X-API-Key"
SCHEME_NAME = "ApiKey"
UNAUTHORIZED: dict[str, Any] = {
    "description": "missing or wrong API key",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


class ApiKeyMiddleware:
    """Answer 401 JSON to HTTP requests without the right key, except on the open paths."""

    def __init__(self, app: ASGIApp, key: str, open_paths: list[str]) -> None:
        self.app = app
        self.key = key.encode()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        metrics.ERRORS.labels(kind="unauthorized").inc()
        response = JSONResponse(
            {"detail": f"a valid API key is required in the {API_KEY_HEADER} header"},
            status_code=401,
            headers={"WWW-Authenticate": f'{SCHEME_NAME} header="{API_KEY_HEADER}"'},
        )
        await response(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        # Check every X-API-Key header with compare_digest, so timing tells nothing about the key.
        provided = [value for name, value in scope["headers"] if name == API_KEY_HEADER.lower().encode()]
        return any(hmac.compare_digest(value, self.key) for value in provided)


def install_access_control(app: FastAPI, settings: Settings) -> None:
    """Add the API-key check and CORS when configured; with neither, the app is unchanged."""
    if settings.api_key is not None:
        app.add_middleware(
            ApiKeyMiddleware, key=settings.api_key.get_secret_value(), open_paths=list(settings.open_paths)
        )
        _declare_api_key(app, settings.open_paths)
    # Added last so it wraps the key check: browsers send CORS preflights without credentials.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )


def _declare_api_key(app: FastAPI, open_paths: list[str]) -> None:
    """Make /openapi.json say which operations need the X-API-Key header."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME_NAME] = {
                "type": "apiKey",
                "in": "header",
                "name": API_KEY_HEADER,
            }
            for path, operations in schema["paths"].items():
                if path not in open_paths:
                    for operation in operations.values():
                        operation["security"] = [{SCHEME_NAME: []}]
                        operation["responses"].setdefault("401", UNAUTHORIZED)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
