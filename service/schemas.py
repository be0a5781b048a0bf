"""Pydantic response models: the JSON contract of docs/API.md."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer


class ModelRef(BaseModel):
    name: str = Field(examples=["gender-mini-xception"])
    version: str = Field(examples=["2026.11.22"])


class ImageSize(BaseModel):
    width: int
    height: int


class FaceBox(BaseModel):
    x: int
    y: int
    width: int
    height: int


class Landmarks(BaseModel):
    """Named facial points, [x, y] in pixels of the upright image, as the subject sees them."""

    right_eye: list[float] = Field(min_length=2, max_length=2, description="the eye on the image's left")
    left_eye: list[float] = Field(min_length=2, max_length=2, description="the eye on the image's right")
    nose_tip: list[float] = Field(min_length=2, max_length=2)
    mouth: list[float] = Field(min_length=2, max_length=2, description="centre of the mouth")
    right_ear: list[float] = Field(min_length=2, max_length=2, description="tragion; may lie outside the box")
    left_ear: list[float] = Field(min_length=2, max_length=2, description="tragion; may lie outside the box")


class GenderProbabilities(BaseModel):
    female: float = Field(ge=0.0, le=1.0)
    male: float = Field(ge=0.0, le=1.0)


class Face(BaseModel):
    box: FaceBox = Field(description="pixels of the upright image (EXIF orientation applied), clipped to it")
    detection_score: float = Field(ge=0.0, le=1.0)
    gender: GenderProbabilities = Field(description="calibrated probabilities; female + male == 1")
    label: str = Field(description="female, male, or uncertain when max(P) < min_confidence", examples=["female"])
    landmarks: Landmarks | None = Field(
        None, description="only with a detector that finds landmarks (blazeface): eyes, nose, mouth, ears"
    )
    cam: dict[str, list[list[float]]] | None = Field(
        None,
        description="only with explain=true: the model's pre-pooling class activation map per label, "
        "rows top to bottom over the face crop",
    )

    @model_serializer(mode="wrap")
    def _omit_absent_extras(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``cam`` and ``landmarks`` out of the JSON when there are none, so existing clients see no change."""
        data: dict[str, Any] = handler(self)
        for key in ("cam", "landmarks"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Timings(BaseModel):
    decode: float
    detect: float
    classify: float
    total: float


class PredictResponse(BaseModel):
    model: ModelRef
    image: ImageSize
    faces: list[Face] = Field(description="largest box first; empty when no face is found")
    timings_ms: Timings


class FileError(BaseModel):
    status: int
    detail: str


class BatchItem(BaseModel):
    filename: str
    image: ImageSize | None = None
    faces: list[Face] | None = None
    error: FileError | None = None


class BatchResponse(BaseModel):
    model: ModelRef
    results: list[BatchItem]


class Status(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    detail: str


class ModelInfo(BaseModel):
    """The loaded model's metadata as written by the training export."""

    name: str
    version: str
    sha256: str
    input: dict[str, Any]
    labels: list[str]
    temperature: float
    architecture: str | None = None
    parameters: int | None = None
    detector: str
    explanations: bool = Field(description="whether explain=true is available (the model has class activation maps)")
    flip_average: bool = Field(
        description="whether each face's probabilities are averaged with those of its mirror image"
    )
    class_maps: dict[str, Any] | None = Field(None, description="the class-map output the metadata declares")
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
