"""Hostile image files built from scratch: size-lying headers (decompression bombs), odd modes, polyglots."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

BOMB_SIDE = 30_000


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def noise(width: int = 32, height: int = 24, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8), "RGB").convert(mode)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid PNG header declaring side x side RGB pixels, with a few bytes of image data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))  # fmt: skip


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) is rewritten to declare side x side."""
    data = bytearray(encode(noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def webp_bomb() -> bytes:
    """A real 16x16 lossless WebP whose VP8L header is rewritten to 16384 x 16384, the format's largest."""
    data = bytearray(encode(noise(16, 16), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~((1 << 28) - 1)) | 16383 | (16383 << 14)  # 14 bits each: width - 1, height - 1
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def bmp_bomb(side: int = BOMB_SIDE) -> bytes:
    data = bytearray(encode(noise(4, 4), "BMP"))
    data[18:26] = struct.pack("<ii", side, side)
    return bytes(data)


def tiff_bomb(side: int = BOMB_SIDE) -> bytes:
    """An uncompressed little-endian TIFF whose ImageWidth and ImageLength tags are rewritten."""
    data = bytearray(encode(noise(4, 4), "TIFF"))
    assert data[:2] == b"II"
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            data[entry + 8 : entry + 12] = struct.pack(
                "<HH" if kind == 3 else "<I", *((side, 0) if kind == 3 else (side,))
            )
    return bytes(data)


def gif_bomb(side: int = BOMB_SIDE) -> bytes:
    data = bytearray(encode(noise(4, 4, "P"), "GIF"))
    data[6:10] = struct.pack("<HH", side, side)
    return bytes(data)


def with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return encode(noise(), "JPEG", exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    frames = [noise(seed=1), noise(seed=2)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def jpeg_with_zip() -> bytes:
    """A JPEG followed by a ZIP archive (a 'GIFAR'-style polyglot): both readers accept it."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.js", "alert(1)")
    return encode(noise(), "JPEG") + archive.getvalue()


def png_with_html() -> bytes:
    return encode(noise(), "PNG") + b"<html><script>alert(1)</script></html>"


def palette_with_transparency() -> bytes:
    image = noise(mode="P")
    return encode(image, "PNG", transparency=0)


# name -> (bytes, expected status). Bombs: 413 from the header before any pixel is decoded.
CORPUS: dict[str, tuple[bytes, int]] = {
    "zero bytes": (b"", 400),
    "one byte": (b"\xff", 400),
    "random bytes": (bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8)), 400),
    "jpeg magic only": (b"\xff\xd8\xff", 400),
    "png magic only": (b"\x89PNG\r\n\x1a\n", 400),
    "webp magic only": (b"RIFF\0\0\0\0WEBPVP8 ", 400),
    "truncated jpeg": (encode(noise(64, 64), "JPEG")[:300], 400),
    "truncated png": (encode(noise(64, 64), "PNG")[:200], 400),
    "truncated webp": (encode(noise(64, 64), "WEBP")[:100], 400),
    "truncated tiff": (encode(noise(64, 64), "TIFF")[:100], 400),
    "bomb png 10000x10000": (png_bomb(10_000), 413),
    "bomb jpeg 10000x10000": (jpeg_bomb(10_000), 413),
    "bomb png 30000x30000": (png_bomb(), 413),
    "bomb jpeg 30000x30000": (jpeg_bomb(), 413),
    "bomb webp 16384x16384": (webp_bomb(), 413),
    "bomb bmp 30000x30000": (bmp_bomb(), 413),
    "bomb tiff 30000x30000": (tiff_bomb(), 413),
    "bomb gif 30000x30000": (gif_bomb(), 415),
    "1x1 png": (encode(Image.new("RGB", (1, 1)), "PNG"), 200),
    "1x1 jpeg": (encode(Image.new("RGB", (1, 1)), "JPEG"), 200),
    "16-bit grey png": (encode(Image.fromarray(np.full((24, 32), 40000, np.uint16)), "PNG"), 200),
    "16-bit grey tiff": (encode(Image.fromarray(np.full((24, 32), 40000, np.uint16)), "TIFF"), 200),
    "float tiff": (encode(Image.fromarray(np.full((24, 32), 0.5, np.float32)), "TIFF"), 200),
    "cmyk jpeg": (encode(noise(mode="CMYK"), "JPEG"), 200),
    "cmyk tiff": (encode(noise(mode="CMYK"), "TIFF"), 200),
    "palette png with transparency": (palette_with_transparency(), 200),
    "rgba png": (encode(noise(mode="RGBA"), "PNG"), 200),
    "la png": (encode(noise(mode="LA"), "PNG"), 200),
    "1-bit png": (encode(noise(mode="1"), "PNG"), 200),
    "rgba webp": (encode(noise(mode="RGBA"), "WEBP"), 200),
    "animated gif": (animated("GIF"), 415),
    "animated webp": (animated("WEBP"), 415),
    "animated png": (animated("PNG"), 415),
    "multi-page tiff": (animated("TIFF"), 200),
    "exif orientation 0": (with_orientation(0), 200),
    "exif orientation 9": (with_orientation(9), 200),
    "exif orientation 65535": (with_orientation(65535), 200),
    "jpeg + zip polyglot": (jpeg_with_zip(), 200),
    "png + html polyglot": (png_with_html(), 200),
    "jpeg magic + html": (b"\xff\xd8\xff<html><script>alert(1)</script></html>", 400),
    "pdf header + jpeg": (b"%PDF-1.7\n" + encode(noise(), "JPEG"), 415),
    "svg with script": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 415),
    "html": (b"<!doctype html><html></html>", 400),
}
