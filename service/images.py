"""Image intake: sniff the type from the bytes, enforce limits before decoding, decode upright BGR."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

# PIL's names of the formats we decode; "PPM" is PIL's plugin for every Netpbm file (PBM, PGM, PPM).
SUPPORTED = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM")
SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP, TIFF, PPM or PGM"
# Netpbm's magic numbers: bitmap, greymap and pixmap, each as ASCII (P1-P3) or binary (P4-P6) samples.
NETPBM_MAGIC = (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"%PDF", 0, "PDF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypavif", 4, "AVIF"),
)

# JPEG colour modes that OpenCV's libjpeg-turbo decoder turns into the same BGR as the PIL path, about
# several times faster (benchmarks/stages.py); EXIF orientation is applied by cv2.imdecode itself.
FAST_JPEG_MODES = ("RGB", "L")
JPEG_END = b"\xff\xd9"

# Our own pixel limit, read from the header, refuses large images; PIL's bomb guard stays as a second
# line for files that declare so many pixels that PIL refuses to open them at all.
Image.MAX_IMAGE_PIXELS = 200_000_000


@dataclass(frozen=True)
class DecodedImage:
    """An upright image as BGR uint8, with the format its bytes declared."""

    bgr: npt.NDArray[np.uint8]
    format: str

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])


def sniff_format(data: bytes) -> str | None:
    """The container format named by the file's first bytes, or None."""
    for signature, offset, name in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature and (name != "WEBP" or data[:4] == b"RIFF"):
            return name
    if data[:2] in NETPBM_MAGIC and data[2:3].isspace():
        return "PPM"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "SVG"
    return None


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode ``data`` into an upright BGR array or raise the domain error that says why not."""
    if not data:
        raise InvalidImage("the upload is empty")
    declared = sniff_format(data)
    if declared is None:
        raise InvalidImage(f"the bytes are not an image ({SUPPORTED_TEXT} expected)")
    if declared not in SUPPORTED:
        raise UnsupportedMediaType(f"{declared} images are not supported; send {SUPPORTED_TEXT}")
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=[declared])
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"the image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
            )
        if getattr(image, "is_animated", False) and declared != "TIFF":
            raise UnsupportedMediaType("animated images are not supported; send a single frame")
        fast = _decode_jpeg_fast(data) if declared == "JPEG" and image.mode in FAST_JPEG_MODES else None
        if fast is not None:
            return DecodedImage(fast, declared)
        image.load()
        # PIL opens a Netpbm file with more than 8 bits per sample as mode "I", scaled to 0..65535.
        sixteen_bit = declared == "PPM" and image.mode == "I"
        image = _upright(image)
        rgb = _to_rgb(image, sixteen_bit)
    except (ImageTooLarge, UnsupportedMediaType):
        raise
    except Image.DecompressionBombError:
        # PIL's own guard fired first; its message names PIL's limit, not ours.
        raise ImageTooLarge(f"the image declares more pixels than the {max_pixels:,}-pixel limit") from None
    except UnidentifiedImageError:
        # PIL's message holds the repr of our buffer, which would hand the client a heap address.
        raise InvalidImage(f"the {declared} header is not valid") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        raise InvalidImage(f"the {declared} data cannot be decoded ({type(exc).__name__}: {exc})") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InvalidImage("the image has no pixels")
    return DecodedImage(np.ascontiguousarray(rgb[:, :, ::-1]), declared)


def _decode_jpeg_fast(data: bytes) -> npt.NDArray[np.uint8] | None:
    """Upright BGR from OpenCV, or None to fall back to PIL.

    A JPEG without its end marker is truncated: libjpeg would fill the missing rows with grey and
    succeed, where PIL refuses it, so such files go the PIL way and get a clear error.
    """
    if not data.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else np.asarray(bgr, dtype=np.uint8)


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation so boxes are reported in upright pixels; bad EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(image) or image
    except (OSError, ValueError, TypeError, KeyError, SyntaxError):
        return image


def _to_rgb(image: Image.Image, sixteen_bit: bool = False) -> npt.NDArray[np.uint8]:
    """Any PIL mode (grey, 16-bit, palette, alpha, CMYK, ...) to RGB uint8; alpha is laid on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        wide = sixteen_bit or image.mode.startswith("I;16") or values.max(initial=0) > 255
        top = 65535.0 if wide else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
