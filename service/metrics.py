"""Every Prometheus metric of the service; the only module that imports prometheus_client."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Millisecond resolution at the fast end, up to 5 s for very large images.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                   2.5, 5.0)  # fmt: skip
FACE_BUCKETS = (0, 1, 2, 3, 4, 5, 10, 20, 50, 100)
STAGES = ("decode", "detect", "classify")

REQUESTS = Counter("facegender_requests_total", "HTTP requests by route and status class", ["route", "status"])
REQUEST_DURATION = Histogram(
    "facegender_request_duration_seconds", "HTTP request duration by route", ["route"], buckets=LATENCY_BUCKETS
)
STAGE_DURATION = Histogram(
    "facegender_stage_duration_seconds", "Duration of one pipeline stage per image", ["stage"], buckets=LATENCY_BUCKETS
)
FACES_PER_IMAGE = Histogram("facegender_faces_per_image", "Faces reported per image", buckets=FACE_BUCKETS)
IMAGES = Counter("facegender_images_total", "Images processed, by whether any face was found", ["result"])
PREDICTIONS = Counter("facegender_predictions_total", "Faces classified, by reported label", ["label"])
ERRORS = Counter("facegender_errors_total", "Refused or failed requests by kind", ["kind"])
IN_FLIGHT = Gauge("facegender_requests_in_flight", "Requests being served now")
MODEL_INFO = Gauge("facegender_model_info", "The loaded model (value 1)", ["name", "version", "sha256"])
READY = Gauge("facegender_ready", "1 when the model and detector are loaded and warmed up, else 0")

for _stage in STAGES:
    STAGE_DURATION.labels(stage=_stage)
for _result in ("faces", "no_face"):
    IMAGES.labels(result=_result)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
