"""explain=true: class activation maps from the real bundled model, and a model without them."""

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL
from service.errors import ModelLoadError
from service.preprocess import Box, crop_region
from tests.service.test_api import post_image


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def decode(jpeg_bytes: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes)).convert("RGB")).astype(int)


def test_explain_adds_one_grid_per_label_that_pools_to_the_served_probabilities(client, two_faces_jpeg):
    info = client.get("/v1/models").json()
    assert info["explanations"] is True
    rows, columns, labels = info["class_maps"]["shape"][1:]
    assert labels == len(info["labels"])
    plain = post_image(client, two_faces_jpeg).json()["faces"]
    explained = post_image(client, two_faces_jpeg, params={"explain": "true"}).json()["faces"]
    assert len(plain) == len(explained) == 2
    for without, face in zip(plain, explained, strict=True):
        assert "cam" not in without
        assert {k: v for k, v in face.items() if k != "cam"} == without
        assert set(face["cam"]) == set(info["labels"])
        grids = {label: np.array(grid) for label, grid in face["cam"].items()}
        assert all(grid.shape == (rows, columns) for grid in grids.values())
        assert all(grid.std() > 0 for grid in grids.values())
        pooled = np.array([grids[label].mean() for label in info["labels"]])
        served = np.array([face["gender"][label] for label in info["labels"]])
        # One pass: the pooled maps are the logits. Flip-averaged, the maps and the probabilities are each the
        # mean of two passes, and a mean of softmaxes is only near the softmax of the mean
        # (tests/service/test_classifier.py checks both averages exactly).
        tolerance = 0.03 if info["flip_average"] else 1e-3
        np.testing.assert_allclose(softmax(pooled / info["temperature"]), served, atol=tolerance)
        assert softmax(pooled).argmax() == served.argmax()


def test_explain_false_and_bad_values(client, astronaut_jpeg):
    assert "cam" not in post_image(client, astronaut_jpeg, params={"explain": "false"}).json()["faces"][0]
    response = post_image(client, astronaut_jpeg, params={"explain": "maybe"})
    assert response.status_code == 422 and "explain" in response.json()["detail"]


def test_annotate_with_explain_tints_the_face_crop_and_nothing_else(client, astronaut_jpeg):
    plain = decode(post_image(client, astronaut_jpeg, path="/annotate").content)
    tinted = decode(post_image(client, astronaut_jpeg, path="/annotate", params={"explain": "true"}).content)
    box = Box(**post_image(client, astronaut_jpeg).json()["faces"][0]["box"])
    x0, y0, x1, y1 = crop_region(box, client.app.state.pipeline.classifier.spec)
    diff = np.abs(plain - tinted).sum(axis=2)
    inside = diff[max(y0, 0) + box.height // 4 : y1 - 8, max(x0, 0) + 8 : x1 - 8]
    assert inside.mean() > 30  # the heat map is blended over the face crop
    outside = np.ones_like(diff, dtype=bool)
    outside[max(y0 - 16, 0) : y1 + 16, max(x0 - 16, 0) : x1 + 16] = False  # JPEG blocks blur the edge
    assert diff[outside].max() <= 3


@pytest.fixture(scope="module")
def mapless_model(tmp_path_factory):
    """The bundled model with its class-map output removed from the graph and from the metadata."""
    onnx = pytest.importorskip("onnx", reason="needs the onnx package (train extra) to edit the graph")
    folder = tmp_path_factory.mktemp("mapless")
    proto = onnx.load(BUNDLED_MODEL)
    kept = [o for o in proto.graph.output if o.name != "class_maps"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    data = proto.SerializeToString()
    metadata = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())
    path = folder / "mapless.onnx"
    path.write_bytes(data)
    declared = {**metadata, "sha256": hashlib.sha256(data).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps({**declared, "class_maps": None}))
    return path, declared


def test_a_model_without_class_maps_says_so_and_refuses_explain(settings, mapless_model, astronaut_jpeg, client):
    path, _ = mapless_model
    with TestClient(create_app(settings.model_copy(update={"model": path}))) as mapless:
        info = mapless.get("/v1/models").json()
        assert info["explanations"] is False and info["class_maps"] is None
        for route in ("/predict", "/annotate"):
            refused = post_image(mapless, astronaut_jpeg, path=route, params={"explain": "true"})
            assert refused.status_code == 422
            assert "class activation maps" in refused.json()["detail"]
        served = post_image(mapless, astronaut_jpeg)
        assert served.status_code == 200
        assert served.json()["faces"][0]["gender"] == post_image(client, astronaut_jpeg).json()["faces"][0]["gender"]


def test_metadata_declaring_maps_the_graph_lacks_is_refused_at_load(mapless_model, tmp_path):
    path, declared = mapless_model
    shutil.copyfile(path, tmp_path / "liar.onnx")
    (tmp_path / "liar.json").write_text(json.dumps(declared))
    with pytest.raises(ModelLoadError, match="class maps"):
        GenderClassifier(tmp_path / "liar.onnx")
