import hashlib
import json

import numpy as np
import onnx
import pytest

from service.detector import create_detector
from service.preprocess import CropSpec, preprocess_faces

pytestmark = [pytest.mark.train, pytest.mark.slow]

export = pytest.importorskip("training.export", reason="needs the train extra")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from training.model import build_model

    model = build_model("mini_xception", (32, 32, 3))
    model(np.zeros((1, 32, 32, 3), np.float32))
    path = tmp_path_factory.mktemp("run") / "best.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def real_faces():
    """The astronaut's face cut at several margins: real pixels for the parity check."""
    import cv2

    from tests.conftest import FIXTURES

    image = cv2.imread(str(FIXTURES / "astronaut.jpg"))
    box = create_detector("ssd").detect(image)[0].box
    faces = [preprocess_faces(image, [box], CropSpec(size=32, margin=m)) for m in (0.0, 0.1, 0.2, 0.3, 0.4)]
    flipped = [f[:, :, ::-1] for f in faces]
    return np.concatenate(faces + flipped).astype(np.float32)


def test_export_round_trip_matches_keras_in_onnxruntime(tiny_checkpoint, real_faces, tmp_path):
    import keras
    import onnxruntime as ort

    out = tmp_path / "tiny.onnx"
    metadata = export.export_checkpoint(tiny_checkpoint, out, version="2026.1.1", parity_faces=real_faces)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[1:] == [32, 32, 3] and not isinstance(inp.shape[0], int)
    assert [o.name for o in session.get_outputs()] == ["probabilities", "class_maps"]
    model = keras.models.load_model(tiny_checkpoint)
    pre_pooling = keras.Model(model.inputs, model.get_layer("class_maps").output)
    for batch in (1, 7):
        probs, maps = session.run(None, {"input": real_faces[:batch]})
        np.testing.assert_allclose(probs, model.predict(real_faces[:batch], verbose=0), atol=1e-4)
        np.testing.assert_allclose(maps, pre_pooling.predict(real_faces[:batch], verbose=0), atol=1e-4)
        assert maps.shape == (batch, 2, 2, 2)

    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == json.loads(json.dumps(metadata))
    assert saved["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert saved["labels"] == ["female", "male"]
    assert saved["card"] is None  # no evaluate ran, so there is no card to name
    assert saved["inference"] == {"flip_average": False}
    assert saved["input"]["name"] == "input" and saved["input"]["layout"] == "NHWC"
    assert saved["input"]["crop"]["margin"] == 0.2 and saved["input"]["colour"] == "rgb"
    assert saved["parity"]["faces"] == len(real_faces) and saved["parity"]["max_abs_diff"] <= 1e-4
    assert saved["class_maps"]["name"] == "class_maps" and saved["class_maps"]["shape"] == [None, 2, 2, 2]
    props = {p.key: json.loads(p.value) for p in onnx.load(out).metadata_props}
    assert props["labels"] == ["female", "male"] and props["version"] == "2026.1.1"
    assert onnx.load(out).opset_import[0].version <= 18


@pytest.mark.parametrize(
    ("evaluation", "flip_average"),
    [({}, False), ({"flip_average": True}, True), ({"flip_average": False, "temperature": 1.2}, False)],
)
def test_metadata_asks_the_service_to_flip_average_as_evaluation_chose(tiny_checkpoint, evaluation, flip_average):
    import keras

    model = keras.models.load_model(tiny_checkpoint)
    run = {"evaluation": evaluation}
    metadata = export.build_metadata(model, CropSpec(size=32), run, "tiny", "2026.1.1", 17, None)
    assert metadata["inference"] == {"flip_average": flip_average}


def test_a_model_without_a_class_map_head_exports_probabilities_only(real_faces, tmp_path):
    import keras
    import onnxruntime as ort

    inputs = keras.Input((32, 32, 3), name="input")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probabilities")(x), name="dense_head")
    model.save(tmp_path / "best.keras")
    out = tmp_path / "dense.onnx"
    metadata = export.export_checkpoint(tmp_path / "best.keras", out, parity_faces=real_faces)
    assert metadata["class_maps"] is None
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities"]


def test_parity_check_fails_when_the_onnx_graph_is_wrong(tiny_checkpoint, real_faces):
    import keras

    model = keras.models.load_model(tiny_checkpoint)
    proto = export.convert(model)
    weights = max(proto.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
    array = onnx.numpy_helper.to_array(weights) * 3.0 + 0.5
    weights.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), weights.name))
    with pytest.raises(export.ParityError, match="differs"):
        export.check_parity(model, proto.SerializeToString(), real_faces)


def test_opsets_above_18_are_refused(tiny_checkpoint):
    import keras

    with pytest.raises(ValueError, match="opset"):
        export.convert(keras.models.load_model(tiny_checkpoint), opset=19)
