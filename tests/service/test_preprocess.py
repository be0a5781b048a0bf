import numpy as np
import pytest

from service.preprocess import Box, CropSpec, crop_face, crop_region, preprocess_faces, to_model_input


def test_square_crop_region_is_centred_on_the_box_with_margin():
    spec = CropSpec(margin=0.25, square=True)
    x0, y0, x1, y1 = crop_region(Box(100, 50, 40, 60), spec)
    assert (x1 - x0, y1 - y0) == (90, 90)  # longest side 60 * (1 + 2 * 0.25)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (120.0, 80.0)


def test_box_shaped_crop_keeps_the_aspect_ratio():
    x0, y0, x1, y1 = crop_region(Box(0, 0, 40, 60), CropSpec(margin=0.0, square=False))
    assert (x1 - x0, y1 - y0) == (40, 60)


def test_crop_has_the_spec_shape_and_colour_order():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:, :, 2] = 200  # red in BGR
    rgb = crop_face(image, Box(30, 30, 40, 40), CropSpec(size=32, colour="rgb"))
    grey = crop_face(image, Box(30, 30, 40, 40), CropSpec(size=32, colour="grey"))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert rgb[16, 16].tolist() == [200, 0, 0]
    assert grey.shape == (32, 32, 1)
    assert grey[16, 16, 0] == round(0.299 * 200)


def test_parts_outside_the_image_are_black_and_the_inside_is_kept():
    image = np.full((50, 50, 3), 255, dtype=np.uint8)
    crop = crop_face(image, Box(0, 0, 50, 50), CropSpec(size=100, margin=0.5))
    assert crop.shape == (100, 100, 3)
    assert crop[0, 0].tolist() == [0, 0, 0]
    assert crop[50, 50].tolist() == [255, 255, 255]


def test_a_box_entirely_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="outside"):
        crop_face(np.zeros((10, 10, 3), np.uint8), Box(100, 100, 5, 5), CropSpec(margin=0.0))


def test_model_input_applies_the_spec_scaling():
    spec = CropSpec(size=8, scale=2.0 / 255.0, offset=-1.0)
    crops = np.array([np.zeros((8, 8, 3)), np.full((8, 8, 3), 255)], dtype=np.uint8)
    x = to_model_input(crops, spec)
    assert x.dtype == np.float32
    assert x[0].min() == pytest.approx(-1.0) and x[1].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        to_model_input(crops[:, :4], spec)


def test_preprocess_faces_batches_every_box(astronaut):
    spec = CropSpec()
    batch = preprocess_faces(astronaut, [Box(179, 58, 93, 119), Box(0, 0, 30, 30)], spec)
    assert batch.shape == (2, 64, 64, 3)
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    assert preprocess_faces(astronaut, [], spec).shape == (0, 64, 64, 3)


@pytest.mark.parametrize(
    "kwargs", [{"size": 4}, {"colour": "bgr"}, {"margin": -0.1}, {"margin": 1.5}], ids=["size", "colour", "m-", "m+"]
)
def test_invalid_specs_are_refused(kwargs):
    with pytest.raises(ValueError):
        CropSpec(**kwargs)


def test_spec_round_trips_through_a_dict():
    spec = CropSpec(size=48, colour="grey", margin=0.3, square=False)
    assert CropSpec.from_dict({**spec.to_dict(), "unrelated": 1}) == spec
