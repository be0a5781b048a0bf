"""The one crop-and-normalise step shared by training and serving.

Training imports this module so that a face is framed, resized and scaled
exactly as the service will frame it; the model's metadata carries the spec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

Colour = Literal["rgb", "grey"]
# How the part of a crop region that lies outside the photo is filled: "black" (the first models' rule),
# or "edge", the photo's border pixels carried outwards, which looks like no particular source of photos.
Outside = Literal["black", "edge"]
_BORDERS = {"black": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE}
Point = tuple[float, float]
# Where an aligned crop puts the eyes, in units of the face square (the crop before its margin):
# their distance apart and their height above the square's centre. These are the medians of the eyes
# against res10's boxes on celeba_wild and pixabay_portraits (benchmarks/photosets.py), so an aligned
# crop frames a face as an unaligned res10 crop does, turned upright.
EYE_DISTANCE = 0.333
EYE_HEIGHT = 0.087
# The keypoints a template crop is fitted to, in this order; detectors that find them give them so.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth")


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
    align: bool = False  # turn the eye line level and place the eyes canonically, when eyes are known
    outside: Outside = "black"
    # Where the KEYPOINTS land in the crop, in its pixels: when set, the crop is the least-squares similarity
    # transform that puts the detector's keypoints nearest these places (the "template" crop kind).
    template: tuple[Point, ...] | None = None

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"crop size must be at least 8 pixels, got {self.size}")
        if self.colour not in ("rgb", "grey"):
            raise ValueError(f"colour must be 'rgb' or 'grey', got {self.colour!r}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"margin must be within 0..1, got {self.margin}")
        if self.outside not in _BORDERS:
            raise ValueError(f"outside must be 'black' or 'edge', got {self.outside!r}")
        if self.template is not None:
            points = tuple((float(x), float(y)) for x, y in self.template)
            if not 2 <= len(points) <= len(KEYPOINTS) or math.dist(points[0], points[1]) < 1.0:
                raise ValueError(f"a template names 2 to {len(KEYPOINTS)} distinct keypoints ({', '.join(KEYPOINTS)})")
            object.__setattr__(self, "template", points)

    @property
    def kind(self) -> Literal["box", "eyes", "template"]:
        """How the crop is framed when the detector gives keypoints: by the box, the eyes, or a keypoint template."""
        if self.template is not None:
            return "template"
        return "eyes" if self.align else "box"

    @property
    def channels(self) -> int:
        return 3 if self.colour == "rgb" else 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.template is None:
            del data["template"]  # a spec without one reads as before
        else:
            data["template"] = [list(point) for point in self.template]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropSpec:
        fields = {
            k: data[k]
            for k in ("size", "colour", "margin", "square", "scale", "offset", "align", "outside", "template")
            if k in data
        }
        if fields.get("template") is not None:
            fields["template"] = tuple((float(x), float(y)) for x, y in fields["template"])
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


def crop_face(
    image_bgr: npt.NDArray[np.uint8], box: Box, spec: CropSpec, points: Sequence[Point] | None = None
) -> npt.NDArray[np.uint8]:
    """Cut the face out of a BGR image and resize it to the spec: uint8, shape ``spec.shape``.

    ``points`` are the face's KEYPOINTS in that order (at least the subject's right and left eye centres,
    left and right in an upright photo). With a ``spec.template`` and points given, the crop is
    ``template_matrix``'s fit; with ``spec.align`` and eyes, ``alignment_matrix``'s; else the box's region.
    Parts of the region outside the image are filled as ``spec.outside`` says, the same way in training and serving.
    """
    height, width = image_bgr.shape[:2]
    if spec.template is not None and points is not None and len(points) >= 2:
        resized = _warp(image_bgr, template_matrix(points, spec.template), spec.size, spec.outside)
    elif spec.align and points is not None and len(points) >= 2:
        eyes = (points[0], points[1])
        resized = _warp(image_bgr, alignment_matrix(eyes, spec), spec.size, spec.outside)
    else:
        x0, y0, x1, y1 = crop_region(box, spec)
        inner: npt.NDArray[np.uint8] = image_bgr[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
        if inner.size == 0:
            raise ValueError(f"face box {box} lies outside the {width}x{height} image")
        pad = (max(-y0, 0), max(y1 - height, 0), max(-x0, 0), max(x1 - width, 0))
        if any(pad):
            border = _BORDERS[spec.outside]
            inner = np.asarray(cv2.copyMakeBorder(inner, *pad, borderType=border, value=(0, 0, 0)))
        shrinking = inner.shape[0] > spec.size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        resized = np.asarray(cv2.resize(inner, (spec.size, spec.size), interpolation=interpolation), np.uint8)
    if spec.colour == "grey":
        return np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)[:, :, np.newaxis], dtype=np.uint8)
    return np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def alignment_matrix(eyes: tuple[Point, Point], spec: CropSpec) -> npt.NDArray[np.float64]:
    """The 2x3 similarity transform (rotation, uniform scale, shift) from image pixels to crop pixels.

    It puts the eyes on one level line, ``EYE_DISTANCE`` of the face square apart and ``EYE_HEIGHT``
    above its centre; the face square fills ``1 / (1 + 2 * margin)`` of the crop's side.
    """
    (lx, ly), (rx, ry) = eyes
    distance = math.hypot(rx - lx, ry - ly)
    if distance < 1e-6:
        raise ValueError("the two eyes coincide; cannot align")
    face_side = spec.size / (1.0 + 2.0 * spec.margin)
    scale = EYE_DISTANCE * face_side / distance
    angle = math.atan2(ry - ly, rx - lx)
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    mx, my = (lx + rx) / 2.0, (ly + ry) / 2.0
    tx = spec.size / 2.0 - (a * mx + b * my)
    ty = spec.size / 2.0 - EYE_HEIGHT * face_side - (-b * mx + a * my)
    return np.array([[a, b, tx], [-b, a, ty]], np.float64)


def template_matrix(points: Sequence[Point], template: Sequence[Point]) -> npt.NDArray[np.float64]:
    """The 2x3 similarity transform (rotation, uniform scale, shift) that maps ``points`` nearest ``template``
    in the least-squares sense, over the keypoints both have (the first ``min(len)``: at least the two eyes)."""
    n = min(len(points), len(template))
    if n < 2:
        raise ValueError("a template fit needs at least two keypoints")
    src = np.asarray(points[:n], np.float64)
    dst = np.asarray(template[:n], np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    spread = float((s**2).sum())
    if spread < 1e-9:
        raise ValueError("the keypoints coincide; cannot fit the template")
    # With z = x + iy, the similarity is z -> c z + t for one complex c: least squares gives c = <d, s> / |s|^2.
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / spread
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / spread
    tx = dst_mean[0] - (a * src_mean[0] - b * src_mean[1])
    ty = dst_mean[1] - (b * src_mean[0] + a * src_mean[1])
    return np.array([[a, -b, tx], [b, a, ty]], np.float64)


def _warp(
    image: npt.NDArray[np.uint8], matrix: npt.NDArray[np.float64], size: int, outside: Outside = "black"
) -> npt.NDArray[np.uint8]:
    """warpAffine into a size x size crop; a large downscale first area-shrinks the region, against aliasing."""
    scale = math.hypot(matrix[0, 0], matrix[0, 1])
    if scale < 0.5:
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
        height, width = image.shape[:2]
        x0, y0 = (max(0, math.floor(v)) for v in corners.min(axis=0))
        x1, y1 = min(width, math.ceil(corners[:, 0].max())), min(height, math.ceil(corners[:, 1].max()))
        if x1 > x0 and y1 > y0:
            factor = 1.0 / (2.0 * scale)
            region = image[y0:y1, x0:x1]
            target = (max(1, round((x1 - x0) / factor)), max(1, round((y1 - y0) / factor)))
            image = np.asarray(cv2.resize(region, target, interpolation=cv2.INTER_AREA), np.uint8)
            fx, fy = (x1 - x0) / target[0], (y1 - y0) / target[1]
            # crop = M @ source, source = (x0 + fx * u, y0 + fy * v) in the shrunk region's pixels u, v.
            matrix = np.array(
                [
                    [matrix[0, 0] * fx, matrix[0, 1] * fy, matrix[0, 0] * x0 + matrix[0, 1] * y0 + matrix[0, 2]],
                    [matrix[1, 0] * fx, matrix[1, 1] * fy, matrix[1, 0] * x0 + matrix[1, 1] * y0 + matrix[1, 2]],
                ]
            )
    warped = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=_BORDERS[outside], borderValue=(0, 0, 0)
    )
    return np.asarray(warped, np.uint8)


def to_model_input(crops: npt.NDArray[np.uint8], spec: CropSpec) -> npt.NDArray[np.float32]:
    """Scale uint8 crops (N, H, W, C) to the float32 tensor the model takes."""
    if crops.ndim != 4 or crops.shape[1:] != spec.shape:
        raise ValueError(f"expected crops of shape (N, {spec.shape}), got {crops.shape}")
    return crops.astype(np.float32) * np.float32(spec.scale) + np.float32(spec.offset)


def preprocess_faces(
    image_bgr: npt.NDArray[np.uint8],
    boxes: list[Box],
    spec: CropSpec,
    points: Sequence[Sequence[Point] | None] | None = None,
) -> npt.NDArray[np.float32]:
    """Turn every face box of one image into one model batch; ``points`` (each box's KEYPOINTS, or None) align
    the crop when the spec asks."""
    if not boxes:
        return np.zeros((0, *spec.shape), dtype=np.float32)
    per_face = points if points is not None else [None] * len(boxes)
    crops = np.stack([crop_face(image_bgr, box, spec, e) for box, e in zip(boxes, per_face, strict=True)])
    return to_model_input(crops, spec)
