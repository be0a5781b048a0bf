"""Draw face boxes and labels on an image for /annotate."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from service.pipeline import FacePrediction

COLOURS = {"female": (180, 60, 230), "male": (230, 160, 40), "uncertain": (160, 160, 160)}  # BGR


def draw_faces(bgr: npt.NDArray[np.uint8], faces: list[FacePrediction]) -> npt.NDArray[np.uint8]:
    """A copy of the image with each face's box and 'label 93%' above it."""
    out = bgr.copy()
    scale = max(0.4, min(out.shape[:2]) / 900)
    thickness = max(1, round(2 * scale))
    for face in faces:
        b, colour = face.box, COLOURS.get(face.label, COLOURS["uncertain"])
        cv2.rectangle(out, (b.x, b.y), (b.x + b.width, b.y + b.height), colour, thickness)
        text = f"{face.label} {100 * max(face.probabilities.values()):.0f}%"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = b.y - th - base - 4 if b.y - th - base - 4 >= 0 else b.y + b.height
        cv2.rectangle(out, (b.x, top), (b.x + tw + 4, top + th + base + 4), colour, -1)
        cv2.putText(out, text, (b.x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)
    return out


def encode_jpeg(bgr: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buffer)
