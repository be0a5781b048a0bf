import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.config import Settings
from tests.service.conftest import jpeg


def post_image(client, data, path="/predict", params=None, content_type="image/jpeg", filename="face.jpg"):
    return client.post(path, params=params or {}, files={"image": (filename, data, content_type)})


def metric_value(text: str, name: str, **labels) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name + (f"{{{label_text}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_predict_follows_the_contract_field_by_field(client, astronaut_jpeg):
    response = post_image(client, astronaut_jpeg)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "image", "faces", "timings_ms"}
    model = client.get("/v1/models").json()
    assert body["model"] == {"name": model["name"], "version": model["version"]}
    assert body["image"] == {"width": 512, "height": 512}
    assert set(body["timings_ms"]) == {"decode", "detect", "classify", "total"}
    assert all(isinstance(v, float) and v >= 0 for v in body["timings_ms"].values())
    (face,) = body["faces"]
    assert set(face) == {"box", "detection_score", "gender", "label", "landmarks"}
    box = face["box"]
    assert all(isinstance(box[k], int) for k in ("x", "y", "width", "height"))
    assert box["x"] >= 0 and box["x"] + box["width"] <= 512 and box["y"] >= 0 and box["y"] + box["height"] <= 512
    assert 150 <= box["x"] <= 200 and 40 <= box["y"] <= 90
    assert 0.0 <= face["detection_score"] <= 1.0
    assert face["gender"]["female"] + face["gender"]["male"] == pytest.approx(1.0, abs=2e-4)
    assert face["label"] == max(face["gender"], key=face["gender"].get)
    landmarks = face["landmarks"]
    assert set(landmarks) == {"right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear"}
    for name in ("right_eye", "left_eye", "nose_tip", "mouth"):
        x, y = landmarks[name]
        assert box["x"] <= x <= box["x"] + box["width"] and box["y"] <= y <= box["y"] + box["height"], name


def test_a_detector_without_landmarks_leaves_the_field_out(astronaut_jpeg):
    with TestClient(create_app(Settings(detector="ssd"))) as ssd_client:
        (face,) = post_image(ssd_client, astronaut_jpeg).json()["faces"]
    assert set(face) == {"box", "detection_score", "gender", "label"}


def test_landmarks_follow_exif_rotation_into_the_upright_image(client, astronaut_jpeg):
    # The same portrait stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view).
    sideways = Image.open(io.BytesIO(astronaut_jpeg)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", quality=92, exif=exif)
    upright = post_image(client, astronaut_jpeg).json()["faces"][0]
    turned = post_image(client, buffer.getvalue()).json()["faces"][0]
    for name in ("right_eye", "left_eye", "mouth"):
        assert turned["landmarks"][name] == pytest.approx(upright["landmarks"][name], abs=4), name
    assert abs(turned["box"]["x"] - upright["box"]["x"]) <= 4 and abs(turned["box"]["y"] - upright["box"]["y"]) <= 4


def test_raw_image_body_is_accepted(client, astronaut_jpeg):
    response = client.post("/predict", content=astronaut_jpeg, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    assert len(response.json()["faces"]) == 1


@pytest.mark.parametrize("mode", ["RGB", "L"], ids=["ppm", "pgm"])
def test_netpbm_photos_are_accepted_like_png(client, astronaut_jpeg, mode):
    photo = Image.open(io.BytesIO(astronaut_jpeg)).convert(mode)
    png, netpbm = io.BytesIO(), io.BytesIO()
    photo.save(png, "PNG")
    photo.save(netpbm, "PPM")
    expected = post_image(client, png.getvalue(), content_type="image/png").json()["faces"]
    response = post_image(client, netpbm.getvalue(), content_type="image/x-portable-anymap", filename="face.pnm")
    assert response.status_code == 200, response.text
    assert response.json()["faces"] == expected and len(expected) == 1
    raw = client.post("/predict", content=netpbm.getvalue(), headers={"content-type": "image/x-portable-pixmap"})
    assert raw.status_code == 200 and raw.json()["faces"] == expected


def test_faces_are_ordered_largest_first_and_limits_apply(client, two_faces_jpeg):
    faces = post_image(client, two_faces_jpeg).json()["faces"]
    assert len(faces) == 2
    areas = [f["box"]["width"] * f["box"]["height"] for f in faces]
    assert areas[0] > areas[1]
    assert len(post_image(client, two_faces_jpeg, params={"max_faces": 1}).json()["faces"]) == 1
    big_only = post_image(client, two_faces_jpeg, params={"min_face_size": 80}).json()["faces"]
    assert len(big_only) == 1 and big_only[0]["box"] == faces[0]["box"]


def test_min_confidence_marks_uncertain_faces(client, astronaut_jpeg):
    face = post_image(client, astronaut_jpeg, params={"min_confidence": 1.0}).json()["faces"][0]
    assert face["label"] == "uncertain"
    assert face["gender"]["female"] + face["gender"]["male"] == pytest.approx(1.0, abs=2e-4)


def test_exif_rotated_photo_gives_upright_boxes(client, astronaut_jpeg):
    upright_box = post_image(client, astronaut_jpeg).json()["faces"][0]["box"]
    stored = Image.open(io.BytesIO(astronaut_jpeg)).rotate(90, expand=True)  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # viewer must turn it 90 degrees clockwise
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    body = post_image(client, buffer.getvalue()).json()
    assert body["image"] == {"width": 512, "height": 512}
    box = body["faces"][0]["box"]
    for key in ("x", "y", "width", "height"):
        assert abs(box[key] - upright_box[key]) <= 4


def test_no_face_is_200_with_an_empty_list(client, coffee_jpeg):
    response = post_image(client, coffee_jpeg)
    assert response.status_code == 200
    assert response.json()["faces"] == []


@pytest.mark.parametrize(
    ("data", "content_type", "params", "status"),
    [
        (b"", "image/jpeg", {}, 400),
        (b"not an image at all", "image/jpeg", {}, 400),
        (b"%PDF-1.4 fake", "application/pdf", {}, 415),
        (b"GIF89a" + bytes(30), "image/gif", {}, 415),
        (None, "image/jpeg", {"max_faces": 0}, 422),
        (None, "image/jpeg", {"detection_threshold": 2}, 422),
        (None, "image/jpeg", {"min_confidence": "high"}, 422),
    ],
    ids=["empty", "garbage", "pdf", "gif", "max_faces", "threshold", "confidence"],
)
def test_errors_are_json_with_the_right_status(client, astronaut_jpeg, data, content_type, params, status):
    response = post_image(client, astronaut_jpeg if data is None else data, params=params, content_type=content_type)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail


def test_missing_image_field_is_422(client, astronaut_jpeg):
    response = client.post("/predict", files={"photo": ("a.jpg", astronaut_jpeg, "image/jpeg")})
    assert response.status_code == 422
    assert "image" in response.json()["detail"]
    assert client.post("/predict", json={"image": "abc"}).status_code == 422


def test_byte_and_pixel_limits_give_413(settings, astronaut_jpeg):
    small = settings.model_copy(update={"max_bytes": 10_000, "max_pixels": 100_000})
    with TestClient(create_app(small)) as limited:
        too_many_bytes = post_image(limited, astronaut_jpeg)
        assert too_many_bytes.status_code == 413 and "limit" in too_many_bytes.json()["detail"]
        raw = limited.post("/predict", content=astronaut_jpeg, headers={"content-type": "image/jpeg"})
        assert raw.status_code == 413
        big = jpeg(np.zeros((400, 400, 3), np.uint8))
        assert len(big) < 10_000
        too_many_pixels = post_image(limited, big)
        assert too_many_pixels.status_code == 413 and "pixels" in too_many_pixels.json()["detail"]
        assert post_image(limited, jpeg(np.zeros((100, 100, 3), np.uint8))).status_code == 200


def test_service_keeps_serving_after_errors(client, astronaut_jpeg):
    for _ in range(3):
        assert post_image(client, b"\xff\xd8\xff\xe0broken").status_code == 400
    assert post_image(client, astronaut_jpeg).status_code == 200


def test_not_ready_before_the_model_is_loaded(settings, astronaut_jpeg):
    unstarted = TestClient(create_app(settings))  # no context manager: the lifespan never runs
    assert unstarted.get("/healthz").json() == {"status": "ok"}
    for response in (unstarted.get("/readyz"), post_image(unstarted, astronaut_jpeg), unstarted.get("/v1/models")):
        assert response.status_code == 503
        assert "loading" in response.json()["detail"]


def test_ready_after_start(client):
    assert client.get("/readyz").json() == {"status": "ready"}


def test_batch_reports_each_file_in_order(client, astronaut_jpeg, coffee_jpeg):
    files = [
        ("images", ("a.jpg", astronaut_jpeg, "image/jpeg")),
        ("images", ("b.bin", b"garbage", "application/octet-stream")),
        ("images", ("c.jpg", coffee_jpeg, "image/jpeg")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.jpg", "b.bin", "c.jpg"]
    assert len(results[0]["faces"]) == 1 and results[0]["image"] == {"width": 512, "height": 512}
    assert results[1]["error"]["status"] == 400 and results[1]["faces"] is None
    assert results[2]["faces"] == []


def test_batch_file_count_limit(settings, astronaut_jpeg):
    with TestClient(create_app(settings.model_copy(update={"max_batch_files": 2}))) as limited:
        files = [("images", (f"{i}.jpg", astronaut_jpeg, "image/jpeg")) for i in range(3)]
        response = limited.post("/predict/batch", files=files)
        assert response.status_code == 422 and "at most 2" in response.json()["detail"]


def test_annotate_returns_the_upright_jpeg_with_boxes(client, astronaut_jpeg):
    response = post_image(client, astronaut_jpeg, path="/annotate")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert drawn.shape == (512, 512, 3)
    original = np.asarray(Image.open(io.BytesIO(astronaut_jpeg)).convert("RGB"))
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100  # something was drawn


def test_model_info_carries_the_metadata(client):
    info = client.get("/v1/models").json()
    assert info["labels"] == ["female", "male"]
    assert len(info["sha256"]) == 64
    assert info["input"]["shape"][1:] == [
        info["input"]["size"],
        info["input"]["size"],
        3 if info["input"]["colour"] == "rgb" else 1,
    ]
    assert info["temperature"] > 0


def test_request_id_is_echoed_or_created(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/healthz").headers["x-request-id"])


def test_metrics_move_after_requests(client, astronaut_jpeg, coffee_jpeg):
    before = client.get("/metrics").text
    post_image(client, astronaut_jpeg)
    post_image(client, coffee_jpeg)
    post_image(client, b"junk")
    after = client.get("/metrics").text
    for name, labels, delta in [
        ("facegender_requests_total", {"route": "/predict", "status": "2xx"}, 2),
        ("facegender_requests_total", {"route": "/predict", "status": "4xx"}, 1),
        ("facegender_errors_total", {"kind": "invalid_image"}, 1),
        ("facegender_faces_per_image_count", {}, 2),
        ("facegender_images_total", {"result": "no_face"}, 1),
        ("facegender_stage_duration_seconds_count", {"stage": "detect"}, 2),
        ("facegender_request_duration_seconds_count", {"route": "/predict"}, 3),
    ]:
        assert metric_value(after, name, **labels) - metric_value(before, name, **labels) == delta, name
    labels = sum(metric_value(after, "facegender_predictions_total", label=k) for k in ("female", "male"))
    assert labels >= 1
    assert 'facegender_model_info{name="' in after
    assert metric_value(after, "facegender_requests_in_flight") == 1  # the scrape itself


def test_ready_gauge_follows_the_lifecycle(settings):
    app = create_app(settings)
    with TestClient(app) as started:
        assert metric_value(started.get("/metrics").text, "facegender_ready") == 1
    with TestClient(app) as probe:
        assert metric_value(probe.get("/metrics").text, "facegender_ready") == 1
    assert app.state.pipeline is None


def test_openapi_documents_the_image_upload(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "image" in body["multipart/form-data"]["schema"]["properties"]
    assert {"400", "413", "415", "422", "503"} <= set(schema["paths"]["/predict"]["post"]["responses"])
    assert client.get("/docs").status_code == 200
