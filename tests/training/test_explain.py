import json

import cv2
import numpy as np
import pytest

from service.detector import create_detector
from service.preprocess import CropSpec, crop_face, to_model_input
from tests.conftest import FIXTURES

pytestmark = [pytest.mark.train, pytest.mark.slow]

explain = pytest.importorskip("training.explain", reason="needs the train extra")
SPEC = CropSpec(size=32)


@pytest.fixture(scope="module")
def crops():
    """The astronaut's face and its mirror image, cut with the serving crop at 32x32."""
    image = cv2.imread(str(FIXTURES / "astronaut.jpg"))
    face = crop_face(image, create_detector("ssd").detect(image)[0].box, SPEC)
    return np.stack([face, face[:, ::-1]])


def _model(arch):
    from training.model import build_model

    model = build_model(arch, SPEC.shape)
    model(np.zeros((1, *SPEC.shape), np.float32))
    return model


@pytest.mark.parametrize("arch", ["mini_xception", "plain_cnn", "mobilenet_v2"])
def test_guided_backprop_has_the_crop_shape_and_is_not_the_plain_gradient(arch, crops):
    import tensorflow as tf

    model = _model(arch)
    x = to_model_input(crops, SPEC)
    classes = np.array([0, 1])
    guided = explain.guided_backprop(model, x, classes)
    assert guided.shape == crops.shape
    assert all(np.isfinite(g).all() and g.std() > 0 for g in guided)
    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        chosen = tf.gather(explain.score_model(model)(inputs, training=False)[1], classes, axis=1, batch_dims=1)
    plain = tape.gradient(chosen, inputs).numpy()
    assert plain.std() > 0
    assert np.corrcoef(guided.ravel(), plain.ravel())[0, 1] < 0.95  # the ReLU gradients really were replaced


@pytest.mark.parametrize(("arch", "grid"), [("mini_xception", 2), ("plain_cnn", 2), ("mobilenet_v2", 1)])
def test_grad_cam_covers_the_last_feature_map_and_is_non_negative(arch, grid, crops):
    cams = explain.grad_cam(_model(arch), to_model_input(crops, SPEC), np.array([1, 0]))
    assert cams.shape == (2, grid, grid)
    assert np.isfinite(cams).all() and (cams >= 0).all()


def test_cases_are_fixed_by_the_seed_before_looking_at_them():
    truth = np.arange(200) % 2
    predicted = truth.copy()
    predicted[::7] = 1 - predicted[::7]
    picked = explain.pick_cases(predicted, truth, 4, seed=0)
    assert picked == explain.pick_cases(predicted, truth, 4, seed=0)
    assert picked != explain.pick_cases(predicted, truth, 4, seed=1)
    assert len(picked["correct"]) == len(picked["wrong"]) == 4
    assert all(predicted[i] == truth[i] for i in picked["correct"])
    assert all(predicted[i] != truth[i] for i in picked["wrong"])
    assert len(explain.pick_cases(truth, truth, 4, seed=0)["wrong"]) == 0


def test_explain_command_writes_one_sheet_per_face(tmp_path, capsys):
    from training.__main__ import main

    checkpoint = tmp_path / "run" / "best.keras"
    checkpoint.parent.mkdir()
    _model("mini_xception").save(checkpoint)
    photos = [str(FIXTURES / "astronaut.jpg"), str(FIXTURES / "coffee.jpg")]
    assert main(["explain", str(checkpoint), *photos, "--out", str(tmp_path / "sheets")]) == 0
    (sheet,) = (tmp_path / "sheets").glob("*.png")
    assert sheet.name == "astronaut-jpg-face-1.png"
    drawn = cv2.imread(str(sheet))
    assert drawn.shape[1] > 3 * drawn.shape[0] and drawn.std() > 10
    assert "1 faces in 2 images" in capsys.readouterr().out
    index = json.loads((tmp_path / "sheets" / "index.json").read_text())
    assert [entry["sheet"] for entry in index["sheets"]] == [sheet.name]
    assert sum(index["sheets"][0]["probabilities"].values()) == pytest.approx(1.0, abs=2e-4)
    assert main(["explain", str(checkpoint), "--out", str(tmp_path)]) == 2
