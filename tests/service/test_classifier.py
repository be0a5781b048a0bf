"""Flip averaging with the real bundled model: the mean of a face and its mirror image, calibrated afterwards."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.calibration import apply_temperature
from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL, Settings
from service.detector import create_detector
from service.errors import ModelLoadError
from service.preprocess import Box, preprocess_faces
from tests.conftest import read_fixture


@pytest.fixture(scope="module")
def plain() -> GenderClassifier:
    return GenderClassifier(BUNDLED_MODEL, flip_average=False)


@pytest.fixture(scope="module")
def flipping() -> GenderClassifier:
    return GenderClassifier(BUNDLED_MODEL, flip_average=True)


@pytest.fixture(scope="module")
def faces(plain) -> np.ndarray:
    """The astronaut's face, as detected and cut off-centre twice: crops that are not mirror-symmetric."""
    image = read_fixture("astronaut.jpg")
    box = create_detector("ssd").detect(image)[0].box
    boxes = [box, Box(box.x + 10, box.y - 8, box.width, box.height), Box(box.x - 15, box.y, box.width + 20, box.height)]
    return preprocess_faces(image, boxes, plain.spec)


def raw_run(classifier: GenderClassifier, batch: np.ndarray, output: str) -> np.ndarray:
    return np.asarray(classifier.session.run([output], {classifier.input_name: batch})[0])


def model_declaring(folder: Path, inference: object) -> Path:
    """A copy of the bundled model whose metadata has ``inference`` set (or removed, for None)."""
    metadata = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())
    metadata.pop("inference", None)
    if inference is not None:
        metadata["inference"] = inference
    path = folder / "declared.onnx"
    shutil.copyfile(BUNDLED_MODEL, path)
    path.with_suffix(".json").write_text(json.dumps(metadata))
    return path


def test_flip_averaging_calibrates_the_mean_of_the_two_raw_passes(plain, flipping, faces):
    first = raw_run(plain, faces, plain.output_name)
    mirrored = raw_run(plain, faces[:, :, ::-1], plain.output_name)
    expected = apply_temperature((first.astype(np.float64) + mirrored) / 2, plain.temperature)
    served = flipping.classify(faces)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    assert np.abs(served - plain.classify(faces)).max() > 0.01  # the crops are asymmetric: the mirror counts
    flipped_rows = raw_run(plain, faces[:, ::-1], plain.output_name)
    upside_down = apply_temperature((first.astype(np.float64) + flipped_rows) / 2, plain.temperature)
    assert np.abs(served - upside_down).max() > 0.01  # mirrored left to right, not top to bottom
    calibrated_first = (
        apply_temperature(first, plain.temperature) + apply_temperature(mirrored, plain.temperature)
    ) / 2
    assert np.abs(served - calibrated_first).max() > 1e-3  # the temperature comes after the mean


def test_both_views_go_through_the_model_in_one_call(flipping, faces, monkeypatch):
    calls = []
    run = flipping.session.run
    monkeypatch.setattr(
        flipping.session, "run", lambda names, feed: calls.append(len(feed["input"])) or run(names, feed)
    )
    flipping.classify(faces)
    flipping.classify_with_maps(faces)
    assert calls == [2 * len(faces), 2 * len(faces)]


def test_a_mirror_symmetric_face_gets_the_same_answer_with_and_without_flip(plain, flipping, faces):
    symmetric = (faces + faces[:, :, ::-1]) / 2
    np.testing.assert_allclose(flipping.classify(symmetric), plain.classify(symmetric), rtol=0, atol=1e-6)


def test_class_maps_average_the_map_with_the_mirrored_back_map_of_the_mirror_image(plain, flipping, faces):
    first = raw_run(plain, faces, plain.class_maps_name)
    mirrored = raw_run(plain, faces[:, :, ::-1], plain.class_maps_name)
    probs, maps = flipping.classify_with_maps(faces)
    assert maps.dtype == np.float32 and maps.shape == first.shape
    np.testing.assert_allclose(maps, (first + mirrored[:, :, ::-1]) / 2, rtol=0, atol=1e-5)
    assert np.abs(maps - (first + mirrored) / 2).max() > 0.1  # mirrored back, so the map lies over the face as sent
    np.testing.assert_allclose(probs, flipping.classify(faces), rtol=0, atol=1e-9)


def test_empty_batches_stay_empty_with_flip(flipping):
    empty = np.zeros((0, *flipping.spec.shape), np.float32)
    probs, maps = flipping.classify_with_maps(empty)
    assert flipping.classify(empty).shape == probs.shape == (0, 2)
    assert maps.shape == (0, *flipping.class_maps_shape)


@pytest.mark.parametrize(("inference", "expected"), [(None, False), ({}, False), ({"flip_average": True}, True)])
def test_the_default_is_what_the_metadata_says_and_off_without_it(tmp_path, inference, expected, faces):
    classifier = GenderClassifier(model_declaring(tmp_path, inference))
    assert classifier.flip_average is expected
    assert (
        GenderClassifier(model_declaring(tmp_path, inference), flip_average=not expected).flip_average is not expected
    )
    single = apply_temperature(raw_run(classifier, faces, classifier.output_name), classifier.temperature)
    assert np.allclose(classifier.classify(faces), single, rtol=0, atol=1e-6) is not expected


def test_a_flip_average_that_is_not_a_boolean_is_refused_at_load(tmp_path):
    with pytest.raises(ModelLoadError, match="flip_average"):
        GenderClassifier(model_declaring(tmp_path, {"flip_average": "yes"}))


@pytest.mark.parametrize(
    ("declared", "env", "expected"),
    [(True, None, True), (True, "false", False), (False, "true", True), (None, "1", True)],
)
def test_the_environment_overrides_the_metadata_and_v1_models_reports_the_result(
    tmp_path, monkeypatch, declared, env, expected
):
    inference = None if declared is None else {"flip_average": declared}
    monkeypatch.setenv("FACEGENDER_MODEL", str(model_declaring(tmp_path, inference)))
    if env is None:
        monkeypatch.delenv("FACEGENDER_FLIP_AVERAGE", raising=False)
    else:
        monkeypatch.setenv("FACEGENDER_FLIP_AVERAGE", env)
    with TestClient(create_app(Settings())) as client:
        assert client.app.state.pipeline.classifier.flip_average is expected
        assert client.get("/v1/models").json()["flip_average"] is expected
