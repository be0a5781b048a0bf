import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from tests.service.test_api import post_image

KEY = "s3cret-key-for-tests"
HEAD = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'


@pytest.fixture(scope="module")
def keyed(settings):
    with TestClient(create_app(settings.model_copy(update={"api_key": SecretStr(KEY)}))) as client:
        yield client


def test_api_key_is_required_when_configured(keyed, astronaut_jpeg):
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]}, {"Authorization": f"Bearer {KEY}"}):
        response = keyed.post("/predict", files={"image": ("a.jpg", astronaut_jpeg, "image/jpeg")}, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/json"
        assert "X-API-Key" in response.json()["detail"] and KEY not in response.text
        assert response.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
    ok = keyed.post("/predict", files={"image": ("a.jpg", astronaut_jpeg, "image/jpeg")}, headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and len(ok.json()["faces"]) == 1
    assert keyed.get("/v1/models").status_code == 401
    assert keyed.get("/no-such-path").status_code == 401  # no probing for routes without the key


def test_health_metrics_and_docs_stay_open_by_default(keyed):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert keyed.get(path).status_code == 200, path


def test_open_paths_are_configurable(settings):
    locked = settings.model_copy(update={"api_key": SecretStr(KEY), "open_paths": ["/healthz"]})
    with TestClient(create_app(locked)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200


def test_openapi_declares_the_key_only_when_configured(client, keyed):
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    predict = schema["paths"]["/predict"]["post"]
    assert predict["security"] == [{"ApiKey": []}] and "401" in predict["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_cors_is_off_by_default(client):
    response = client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/predict", headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(settings):
    allowed = "https://app.example"
    configured = settings.model_copy(update={"cors_origins": [allowed], "api_key": SecretStr(KEY)})
    with TestClient(create_app(configured)) as client:
        # The browser's preflight carries no key; it must still be answered.
        preflight = client.options(
            "/predict",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == allowed
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_chunked_oversize_bodies_get_413(settings, astronaut_jpeg):
    """Bodies without Content-Length, raw and multipart, get 413 once the count passes the limit."""
    with TestClient(create_app(settings.model_copy(update={"max_bytes": 1000}))) as limited:

        def chunks(total: int, prefix: bytes = b""):
            yield prefix
            for _ in range(total // 8192):
                yield b"\0" * 8192

        raw = limited.post("/predict", content=chunks(200_000), headers={"content-type": "image/jpeg"})
        assert raw.status_code == 413 and "limit" in raw.json()["detail"]
        multipart = limited.post(
            "/predict", content=chunks(200_000, HEAD), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert multipart.status_code == 413 and "limit" in multipart.json()["detail"]
        assert post_image(limited, astronaut_jpeg[:900]).status_code == 400  # under the limit: decoded, truncated


def drive(app, headers: list[tuple[bytes, bytes]]) -> tuple[int, str, int]:
    """Call the ASGI app with a multipart body that never ends; the status, detail and chunks it read."""
    chunk = b"\0" * 65536
    calls, sent = 0, []

    async def receive():
        nonlocal calls
        calls += 1
        # Capped only so that a broken limit fails the test instead of filling the disk.
        return {"type": "http.request", "body": HEAD if calls == 1 else chunk, "more_body": calls < 400}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {},
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    detail = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["detail"]
    return sent[0]["status"], detail, calls


def test_an_endless_body_is_read_only_up_to_the_limit(client, settings):
    status, detail, calls = drive(client.app, [])
    assert status == 413 and "limit" in detail
    assert calls <= (settings.max_bytes + 64 * 1024) // 65536 + 2


def test_a_declared_oversize_body_is_refused_before_reading(client, settings):
    status, detail, calls = drive(client.app, [(b"content-length", str(settings.max_bytes * 2).encode())])
    assert status == 413 and "limit" in detail and calls == 0
