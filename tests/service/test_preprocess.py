import cv2
import numpy as np
import pytest

from service.preprocess import (
    EYE_DISTANCE,
    EYE_HEIGHT,
    Box,
    CropSpec,
    alignment_matrix,
    crop_face,
    crop_region,
    preprocess_faces,
    template_matrix,
    to_model_input,
)


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


def _eye_scene(right_eye: tuple[float, float], left_eye: tuple[float, float]) -> np.ndarray:
    """A grey image with a red dot at the subject's right eye and a blue dot at the left."""
    image = np.full((400, 400, 3), 128, np.uint8)
    cv2.circle(image, (round(right_eye[0]), round(right_eye[1])), 5, (0, 0, 255), -1)
    cv2.circle(image, (round(left_eye[0]), round(left_eye[1])), 5, (255, 0, 0), -1)
    return image


def _dot(crop: np.ndarray, channel: int) -> tuple[float, float]:
    """The centroid of the pixels where one colour channel dominates (crops are RGB)."""
    others = [c for c in range(3) if c != channel]
    mask = (crop[:, :, channel] > 190) & (crop[:, :, others].max(axis=2) < 90)
    ys, xs = np.nonzero(mask)
    assert len(xs), "dot not found in the crop"
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize("turn", [0.0, 25.0, -40.0])
def test_aligned_crop_puts_the_eyes_where_the_spec_says(turn):
    spec = CropSpec(size=96, margin=0.2, align=True)
    centre, half = np.array([210.0, 190.0]), 30.0
    step = half * np.array([np.cos(np.radians(turn)), np.sin(np.radians(turn))])
    right_eye, left_eye = tuple(centre - step), tuple(centre + step)
    crop = crop_face(_eye_scene(right_eye, left_eye), Box(0, 0, 1, 1), spec, (right_eye, left_eye))
    face_side = spec.size / (1 + 2 * spec.margin)
    want_y = spec.size / 2 - EYE_HEIGHT * face_side
    want_dx = EYE_DISTANCE * face_side / 2
    (rx, ry), (lx, ly) = _dot(crop, 0), _dot(crop, 2)
    assert rx == pytest.approx(spec.size / 2 - want_dx, abs=1.0)
    assert lx == pytest.approx(spec.size / 2 + want_dx, abs=1.0)
    assert ry == pytest.approx(want_y, abs=1.0) and ly == pytest.approx(want_y, abs=1.0)


def test_the_alignment_matrix_is_a_similarity_transform_that_levels_the_eyes():
    spec = CropSpec(size=64, margin=0.1, align=True)
    eyes = ((100.0, 120.0), (160.0, 90.0))
    matrix = alignment_matrix(eyes, spec)
    (a, b, _), (c, d, _) = matrix
    assert a == pytest.approx(d) and b == pytest.approx(-c)  # rotation and one scale, no shear
    mapped = [matrix @ np.array([x, y, 1.0]) for x, y in eyes]
    assert mapped[0][1] == pytest.approx(mapped[1][1])


def test_a_large_face_is_area_shrunk_before_the_turn_and_matches_a_direct_warp():
    # Downscaling by 10x: the pre-shrink must not move the eyes, only remove aliasing.
    spec = CropSpec(size=48, margin=0.2, align=True)
    image = cv2.resize(_eye_scene((150.0, 200.0), (250.0, 200.0)), (4000, 4000), interpolation=cv2.INTER_NEAREST)
    eyes = ((1500.0, 2000.0), (2500.0, 2000.0))
    crop = crop_face(image, Box(0, 0, 1, 1), spec, eyes)
    assert crop.shape == (48, 48, 3)
    face_side = spec.size / (1 + 2 * spec.margin)
    assert _dot(crop, 0)[0] == pytest.approx(spec.size / 2 - EYE_DISTANCE * face_side / 2, abs=1.0)


def test_without_align_in_the_spec_eyes_change_nothing(astronaut):
    spec = CropSpec(size=32)
    box = Box(180, 60, 90, 115)
    assert np.array_equal(
        crop_face(astronaut, box, spec), crop_face(astronaut, box, spec, ((200.0, 100.0), (250.0, 104.0)))
    )


def test_align_round_trips_through_the_metadata_dict():
    assert CropSpec.from_dict(CropSpec(align=True).to_dict()).align is True
    assert CropSpec.from_dict({"size": 64}).align is False


TEMPLATE = ((44.6, 44.8), (100.5, 44.1), (72.3, 79.4), (73.1, 106.1))


def _dots(points, size=(400, 300)):
    """A black image with a white dot at each point, one colour channel per dot so each can be found again."""
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for i, (x, y) in enumerate(points):
        cv2.circle(image, (round(x), round(y)), 4, [255 if c == i % 3 else 0 for c in range(3)], -1)
    return image


def test_template_fit_recovers_a_known_similarity_transform():
    angle, scale, shift = np.deg2rad(17.0), 1.7, np.array([30.0, -12.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # Points that the transform maps exactly onto the template.
    points = [tuple(np.linalg.solve(rotation, np.array(t) - shift)) for t in TEMPLATE]
    matrix = template_matrix(points, TEMPLATE)
    assert np.allclose(matrix[:, :2], rotation, atol=1e-9) and np.allclose(matrix[:, 2], shift, atol=1e-9)


def test_template_crop_puts_the_keypoints_on_the_template():
    # A face turned 20 degrees and 2.3 times the chip's scale, its keypoints drawn as dots.
    angle, scale = np.deg2rad(-20.0), 2.3
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = [tuple(rotation @ (np.array(t) - 75.0) + np.array([200.0, 150.0])) for t in TEMPLATE]
    spec = CropSpec(size=150, scale=1.0, outside="edge", template=TEMPLATE)
    chip = crop_face(_dots(points), Box(100, 50, 200, 200), spec, points)
    assert chip.shape == (150, 150, 3)
    for i, (tx, ty) in enumerate(TEMPLATE):
        channel = chip[:, :, 2 - i % 3].astype(np.float64)  # the crop is RGB, the drawing BGR
        ys, xs = np.nonzero(channel > 100)
        near = (np.abs(xs - tx) < 12) & (np.abs(ys - ty) < 12)
        assert near.sum() > 5, f"no dot near template point {i}"
        assert abs(xs[near].mean() - tx) < 1.5 and abs(ys[near].mean() - ty) < 1.5


def test_template_crop_with_the_eyes_alone_fits_them_exactly():
    eyes = [(120.0, 100.0), (180.0, 110.0)]
    matrix = template_matrix(eyes, TEMPLATE)
    mapped = [matrix[:, :2] @ np.array(p) + matrix[:, 2] for p in eyes]
    assert np.allclose(mapped, TEMPLATE[:2], atol=1e-9)


def test_template_spec_round_trips_through_its_metadata_and_names_its_kind():
    spec = CropSpec(size=150, scale=1.0, template=TEMPLATE)
    data = spec.to_dict()
    assert data["template"] == [list(p) for p in TEMPLATE]
    assert CropSpec.from_dict(data) == spec and spec.kind == "template"
    assert "template" not in CropSpec().to_dict() and CropSpec().kind == "box" and CropSpec(align=True).kind == "eyes"
    with pytest.raises(ValueError, match="keypoints"):
        CropSpec(template=((1.0, 1.0),))


def test_template_spec_without_keypoints_falls_back_to_the_box_crop():
    image = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    box = Box(50, 50, 80, 80)
    spec = CropSpec(size=150, scale=1.0, margin=0.25, template=TEMPLATE)
    assert np.array_equal(crop_face(image, box, spec), crop_face(image, box, CropSpec(size=150, margin=0.25)))
