"""The one crop-and-normalise step shared by training and serving.

Training imports this module so that a face is framed, resized and scaled
exactly as the service will frame it; the model's metadata carries the spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

Colour = Literal["rgb", "grey"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box in pixels of the upright image."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class CropSpec:
    """How a face box becomes a model input: framing, size, colour and scaling."""

    size: int = 64
    colour: Colour = "rgb"
    margin: float = 0.2
    square: bool = True
    scale: float = 1.0 / 255.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"crop size must be at least 8 pixels, got {self.size}")
        if self.colour not in ("rgb", "grey"):
            raise ValueError(f"colour must be 'rgb' or 'grey', got {self.colour!r}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"margin must be within 0..1, got {self.margin}")

    @property
    def channels(self) -> int:
        return 3 if self.colour == "rgb" else 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropSpec:
        fields = {k: data[k] for k in ("size", "colour", "margin", "square", "scale", "offset") if k in data}
        return cls(**fields)


def crop_region(box: Box, spec: CropSpec) -> tuple[int, int, int, int]:
    """Return the (x0, y0, x1, y1) pixel region that frames ``box`` under ``spec``."""
    cx = box.x + box.width / 2.0
    cy = box.y + box.height / 2.0
    if spec.square:
        side = max(box.width, box.height) * (1.0 + 2.0 * spec.margin)
        half_w = half_h = side / 2.0
    else:
        half_w = box.width * (1.0 + 2.0 * spec.margin) / 2.0
        half_h = box.height * (1.0 + 2.0 * spec.margin) / 2.0
    x0, y0 = round(cx - half_w), round(cy - half_h)
    x1, y1 = round(cx + half_w), round(cy + half_h)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def crop_face(image_bgr: npt.NDArray[np.uint8], box: Box, spec: CropSpec) -> npt.NDArray[np.uint8]:
    """Cut the face out of a BGR image and resize it to the spec: uint8, shape ``spec.shape``.

    Parts of the region outside the image are black, so no texture is invented at the edges.
    """
    height, width = image_bgr.shape[:2]
    x0, y0, x1, y1 = crop_region(box, spec)
    inner: npt.NDArray[np.uint8] = image_bgr[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if inner.size == 0:
        raise ValueError(f"face box {box} lies outside the {width}x{height} image")
    pad = (max(-y0, 0), max(y1 - height, 0), max(-x0, 0), max(x1 - width, 0))
    if any(pad):
        inner = np.asarray(cv2.copyMakeBorder(inner, *pad, borderType=cv2.BORDER_CONSTANT, value=(0, 0, 0)))
    shrinking = inner.shape[0] > spec.size
    resized = cv2.resize(inner, (spec.size, spec.size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if spec.colour == "grey":
        return np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)[:, :, np.newaxis], dtype=np.uint8)
    return np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def to_model_input(crops: npt.NDArray[np.uint8], spec: CropSpec) -> npt.NDArray[np.float32]:
    """Scale uint8 crops (N, H, W, C) to the float32 tensor the model takes."""
    if crops.ndim != 4 or crops.shape[1:] != spec.shape:
        raise ValueError(f"expected crops of shape (N, {spec.shape}), got {crops.shape}")
    return crops.astype(np.float32) * np.float32(spec.scale) + np.float32(spec.offset)


def preprocess_faces(image_bgr: npt.NDArray[np.uint8], boxes: list[Box], spec: CropSpec) -> npt.NDArray[np.float32]:
    """Turn every face box of one image into one model batch."""
    if not boxes:
        return np.zeros((0, *spec.shape), dtype=np.float32)
    crops = np.stack([crop_face(image_bgr, box, spec) for box in boxes])
    return to_model_input(crops, spec)
