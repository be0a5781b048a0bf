import io

import numpy as np
import pytest
from PIL import Image

from service.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from service.images import decode_image, sniff_format

LIMIT = 40_000_000


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def gradient(width=64, height=48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack(
        [np.tile(x, (height, 1)), np.full((height, width), 80, np.uint8), np.zeros((height, width), np.uint8)], 2
    )
    return Image.fromarray(rgb, "RGB")


@pytest.mark.parametrize(("fmt", "name"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP"), ("BMP", "BMP"),
                                           ("TIFF", "TIFF"), ("PPM", "PPM")])  # fmt: skip
def test_every_supported_format_decodes_to_bgr(fmt, name):
    decoded = decode_image(encode(gradient(), fmt), LIMIT)
    assert decoded.format == name
    assert decoded.bgr.shape == (48, 64, 3) and decoded.bgr.dtype == np.uint8
    # Red rises left to right; in BGR it is the last channel.
    assert decoded.bgr[10, 60, 2] > 200 > decoded.bgr[10, 2, 2]


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (20, 10), 77),
        Image.new("P", (20, 10), 3),
        Image.new("CMYK", (20, 10), (0, 0, 0, 0)),
        Image.fromarray(np.full((10, 20), 40000, np.uint16)),
    ],
    ids=["grey", "palette", "cmyk", "16-bit"],
)
def test_other_modes_become_three_channel_uint8(image):
    fmt = "JPEG" if image.mode == "CMYK" else "TIFF" if image.mode.startswith("I") else "PNG"
    decoded = decode_image(encode(image, fmt), LIMIT)
    assert decoded.bgr.shape == (10, 20, 3) and decoded.bgr.dtype == np.uint8
    if image.mode.startswith("I"):
        assert decoded.bgr[0, 0, 0] == round(40000 / 65535 * 255)


NETPBM = {
    "binary pgm": (b"P5\n3 1\n255\n\x00\x80\xff", [0, 128, 255]),
    "ascii pgm with a comment": (b"P2\n# from a camera\n3 1\n15\n0 8 15\n", [0, 136, 255]),
    "16-bit pgm": (b"P5\n3 1\n65535\n" + np.array([200, 32768, 65535], ">u2").tobytes(), [1, 128, 255]),
    "binary pbm": (b"P4\n3 1\n\x40", [255, 0, 255]),
    "ascii ppm": (b"P3\n3 1\n255\n0 0 0  128 128 128  255 255 255\n", [0, 128, 255]),
}


@pytest.mark.parametrize("name", NETPBM)
def test_netpbm_files_decode_with_their_sample_depth(name):
    data, grey = NETPBM[name]
    decoded = decode_image(data, LIMIT)
    assert decoded.format == "PPM" and sniff_format(data) == "PPM"
    assert decoded.bgr.shape == (1, 3, 3)
    assert decoded.bgr[0, :, 0].tolist() == grey  # a dark 16-bit sample stays dark, 1-bit black is 0


def test_netpbm_limits_and_damage_are_refused_like_any_format():
    with pytest.raises(ImageTooLarge, match="pixel"):
        decode_image(b"P6\n30000 30000\n255\n" + bytes(64), LIMIT)
    with pytest.raises(InvalidImage, match="PPM"):
        decode_image(encode(gradient(), "PPM")[:100], LIMIT)
    assert sniff_format(b"P5x not a header") is None and sniff_format(b"P7\nWIDTH 1\n") is None


def test_alpha_is_laid_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    decoded = decode_image(encode(rgba, "PNG"), LIMIT)
    assert decoded.bgr[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(("orientation", "rotate"), [(6, 90), (8, 270), (3, 180)])
def test_exif_orientation_gives_upright_pixels(orientation, rotate):
    upright = gradient(64, 48)
    stored = upright.rotate(rotate, expand=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95), LIMIT)
    assert decoded.bgr.shape == (48, 64, 3)
    assert decoded.bgr[24, 60, 2] > 200 > decoded.bgr[24, 3, 2]


def test_bogus_exif_orientation_is_ignored():
    exif = Image.Exif()
    exif[0x0112] = 99
    decoded = decode_image(encode(gradient(), "JPEG", exif=exif.tobytes()), LIMIT)
    assert decoded.bgr.shape == (48, 64, 3)


def test_pixel_limit_is_enforced_from_the_header_before_decoding():
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(ImageTooLarge, match="300x200"):
        decode_image(data, max_pixels=300 * 200 - 1)


def test_a_tiny_file_declaring_a_huge_image_is_refused_quickly():
    header = encode(Image.new("1", (30000, 30000)), "PNG")
    assert len(header) < 200_000
    with pytest.raises(ImageTooLarge):
        decode_image(header, LIMIT)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"hello, world", InvalidImage),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, InvalidImage),
        (b"%PDF-1.7\n...", UnsupportedMediaType),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', UnsupportedMediaType),
        (b"GIF89a" + b"\x00" * 20, UnsupportedMediaType),
    ],
    ids=["empty", "text", "broken-jpeg", "pdf", "svg", "gif"],
)
def test_bad_bytes_raise_the_right_domain_error(data, error):
    with pytest.raises(error):
        decode_image(data, LIMIT)


def test_truncated_png_is_invalid():
    data = encode(gradient(256, 256), "PNG")
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], LIMIT)


def test_animated_webp_is_unsupported():
    frames = [gradient(), gradient().rotate(180)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedMediaType, match="animated"):
        decode_image(data, LIMIT)


def test_sniffing_ignores_names_and_headers():
    assert sniff_format(encode(gradient(), "PNG")) == "PNG"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_fast_jpeg_path_matches_the_pil_path(orientation, mode, monkeypatch):
    # Every EXIF orientation and both fast modes: OpenCV's decode must give PIL's upright pixels.
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(gradient(64, 48).convert(mode), "JPEG", exif=exif.tobytes(), quality=95)
    fast = decode_image(data, LIMIT).bgr
    monkeypatch.setattr("service.images._decode_jpeg_fast", lambda _: None)
    slow = decode_image(data, LIMIT).bgr
    assert fast.shape == slow.shape
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 3


def test_truncated_jpeg_is_invalid():
    data = encode(gradient(256, 256), "JPEG", quality=95)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) * 2 // 3], LIMIT)
