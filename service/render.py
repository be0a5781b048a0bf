"""Draw face boxes, labels and class activation maps on an image for /annotate."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from service.pipeline import FacePrediction
from service.preprocess import CropSpec, crop_region

COLOURS = {"female": (180, 60, 230), "male": (230, 160, 40), "uncertain": (160, 160, 160)}  # BGR
# Weight of the heat map over the photo: strong enough to read, weak enough to still see the face.
HEAT_ALPHA = 0.45


def draw_faces(bgr: npt.NDArray[np.uint8], faces: list[FacePrediction]) -> npt.NDArray[np.uint8]:
    """A copy of the image with each face's box, its landmarks as dots, and 'label 93%' above it (below or inside
    it near the edges)."""
    out = bgr.copy()
    height, width = out.shape[:2]
    scale = max(0.4, min(height, width) / 900)
    thickness = max(1, round(2 * scale))
    for face in faces:
        b, colour = face.box, COLOURS.get(face.label, COLOURS["uncertain"])
        cv2.rectangle(out, (b.x, b.y), (b.x + b.width, b.y + b.height), colour, thickness)
        for x, y in (face.landmarks or {}).values():
            cv2.circle(out, (round(x), round(y)), thickness + 1, colour, -1)
        text = f"{face.label} {100 * max(face.probabilities.values()):.0f}%"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        label_w, label_h = tw + 4, th + base + 4
        # Above the box if it fits, else below it, else inside its top; always shifted to lie within the image.
        top = b.y - label_h if b.y >= label_h else b.y + b.height if b.y + b.height + label_h < height else b.y
        top = min(max(top, 0), max(height - 1 - label_h, 0))
        left = min(max(b.x, 0), max(width - 1 - label_w, 0))
        cv2.rectangle(out, (left, top), (left + label_w, top + label_h), colour, -1)
        cv2.putText(out, text, (left + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)
    return out


def encode_jpeg(bgr: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buffer)


def scale_map(grid: npt.NDArray[np.floating], width: int, height: int) -> npt.NDArray[np.float32]:
    """A small 2-D map stretched to 0..1 (its minimum to its maximum) and resized smoothly to width x height."""
    grid = grid.astype(np.float32)
    span = float(grid.max() - grid.min())
    unit = (grid - grid.min()) / span if span > 0 else np.zeros_like(grid)
    return np.clip(cv2.resize(unit, (width, height), interpolation=cv2.INTER_CUBIC), 0.0, 1.0).astype(np.float32)


def overlay_class_maps(
    bgr: npt.NDArray[np.uint8], faces: list[FacePrediction], spec: CropSpec
) -> npt.NDArray[np.uint8]:
    """A copy of the image with each face's map for its predicted label blended over the crop it covers.

    The map is scaled to 0..1 per face (red: strongest evidence for the label), so it shows where, not how much.
    """
    out = bgr.copy()
    height, width = out.shape[:2]
    for face in faces:
        if face.cam is None:
            continue
        label = face.label if face.label in face.cam else max(face.probabilities, key=lambda k: face.probabilities[k])
        x0, y0, x1, y1 = crop_region(face.box, spec)
        heat = cv2.applyColorMap(
            (255 * scale_map(face.cam[label], x1 - x0, y1 - y0)).astype(np.uint8), cv2.COLORMAP_JET
        )
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx0 >= cx1 or cy0 >= cy1:
            continue
        region = out[cy0:cy1, cx0:cx1]
        part = heat[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        out[cy0:cy1, cx0:cx1] = cv2.addWeighted(region, 1.0 - HEAT_ALPHA, part, HEAT_ALPHA, 0.0)
    return out
