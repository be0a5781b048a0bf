"""All service settings, read from FACEGENDER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.detector import Backend

# An installed wheel carries the bundled model as package data (service/model/, see pyproject.toml); a checkout
# or an editable install reads models/ at the top of the repository, the one copy kept by hand.
_PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED_MODEL = _PACKAGE_DIR / "model" / "gender.onnx"
BUNDLED_MODEL = _INSTALLED_MODEL if _INSTALLED_MODEL.is_file() else _PACKAGE_DIR.parent / "models" / "gender.onnx"


class Settings(BaseSettings):
    """Service configuration; every field can be set as FACEGENDER_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="FACEGENDER_", protected_namespaces=())

    model: Path = Field(BUNDLED_MODEL, description="ONNX model; its metadata JSON must lie beside it")
    detector: Backend = Field("blazeface", description="face detector backend: blazeface, ssd (res10) or haar")
    detection_threshold: float | None = Field(None, ge=0.0, le=1.0, description="default detector cut-off")
    min_face_size: int = Field(20, ge=1, description="default smallest face side reported, pixels")
    max_faces: int = Field(100, ge=1, description="default most faces reported per image")
    detector_input_size: int = Field(
        300, ge=96, le=1024, description="res10 SSD input side in pixels; smaller is faster and misses small faces"
    )
    detector_tile_size: int = Field(
        640, ge=0, description="blazeface: side of the tiles of a second pass over large images (0: no tiles)"
    )
    detect_max_side: int = Field(
        1280, ge=64, description="larger images are shrunk by a whole factor towards this side for detection"
    )
    max_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest accepted upload, bytes")
    max_pixels: int = Field(40_000_000, ge=1, description="largest accepted image, width x height")
    max_batch_files: int = Field(16, ge=1, description="most files in one /predict/batch request")
    flip_average: bool | None = Field(
        None,
        description="average each face's probabilities with its mirror image's (twice the classifier work); "
        "unset: as the model's metadata says",
    )
    ort_threads: int = Field(1, ge=0, description="onnxruntime intra-op threads (0: onnxruntime decides)")
    detector_copies: int = Field(
        2, ge=1, le=64, description="ssd and haar: detector copies, images detected at once (blazeface needs none)"
    )
    opencv_threads: int = Field(0, ge=0, description="OpenCV threads per process (0: OpenCV decides)")
    log_format: Literal["text", "json"] = Field("text", description="log line format")
    log_level: str = Field("INFO", description="logging level")
    detector_dir: Path | None = Field(None, description="folder holding the detector's files (default: as installed)")
    api_key: SecretStr | None = Field(None, description="when set, requests must carry it in X-API-Key")
    open_paths: list[str] = Field(
        ["/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"],
        description="paths served without the API key",
    )
    cors_origins: list[str] = Field([], description="origins allowed by CORS; empty: CORS off")
