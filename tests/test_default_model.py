"""The bundled default model: its files agree with each other and it really tells faces apart."""

import hashlib
import json
import re
import tarfile
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL
from service.detector import create_detector
from service.images import decode_image
from service.pipeline import Pipeline, PredictOptions
from service.preprocess import preprocess_faces
from tests.conftest import ROOT, read_fixture

MODELS = BUNDLED_MODEL.parent


def test_model_files_agree_with_each_other():
    metadata = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())
    data = BUNDLED_MODEL.read_bytes()
    assert len(data) <= 2 * 1024 * 1024
    assert metadata["sha256"] == hashlib.sha256(data).hexdigest()
    assert metadata["size_bytes"] == len(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == metadata["input"]["name"]
    assert inp.shape[1:] == metadata["input"]["shape"][1:]
    props = {p.key: json.loads(p.value) for p in onnx.load_from_string(data).metadata_props}
    for key in ("name", "version", "labels", "input", "temperature"):
        assert props[key] == metadata[key], key
    assert metadata["parity"]["max_abs_diff"] <= 1e-4


def test_model_card_is_shipped_with_its_figures():
    card = (MODELS / "MODEL_CARD.md").read_text()
    metadata = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())
    assert "research" in card.lower() and "apparent" in card.lower()
    for figure in ("celeba_wild_end_to_end", "pixabay_portraits_end_to_end", "celeba_gender_test", "utkface64_test"):
        assert figure in metadata["evaluation"]["sets"]
        assert figure.removesuffix("_end_to_end").removesuffix("_test") in card
    assert "## Results across sources" in card and "### Margin sensitivity" in card
    assert metadata["temperature"] == pytest.approx(metadata["evaluation"]["temperature"])
    for plot in ("confusion.png", "reliability.png", "groups.png"):
        assert (MODELS / plot).is_file()
    sheets = re.findall(r"\]\((explanations/[^)]+\.png)\)", card)
    assert "## Explanations" in card and len(sheets) >= 2
    assert all((MODELS / sheet).is_file() for sheet in sheets)


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_shipped_class_maps_pool_to_the_served_probabilities():
    """GAP of the class maps is the softmax input: softmax(GAP) is the raw output, softmax(GAP / T) what is served
    by one pass (flip-averaging, when on, averages two such passes)."""
    classifier = GenderClassifier(BUNDLED_MODEL, flip_average=False)
    assert classifier.metadata["class_maps"]["name"] == classifier.class_maps_name == "class_maps"
    assert classifier.metadata["class_maps"]["shape"] == [None, 4, 4, 2]
    detector = create_detector("ssd")
    faces = []
    for image in (
        read_fixture("astronaut.jpg"),
        decode_image((ROOT / "benchmarks/photos/camera.jpg").read_bytes(), 10**7).bgr,
    ):
        box = detector.detect(image)[0].box
        for margin in (0.0, 0.2, 0.4):
            faces.append(preprocess_faces(image, [box], replace(classifier.spec, margin=margin)))
    batch = np.concatenate(faces + [f[:, :, ::-1] for f in faces])
    probs, maps = classifier.classify_with_maps(batch)
    assert maps.shape == (len(batch), 4, 4, 2) and maps.std(axis=(1, 2)).min() > 0
    logits = maps.astype(np.float64).mean(axis=(1, 2))
    raw = classifier.session.run([classifier.output_name], {classifier.input_name: batch})[0]
    np.testing.assert_allclose(softmax(logits), raw, atol=1e-5)
    np.testing.assert_allclose(softmax(logits / classifier.temperature), probs, atol=1e-5)
    np.testing.assert_array_equal(probs, classifier.classify(batch))
    assert {"female", "male"} == {classifier.labels[i] for i in probs.argmax(axis=1)}  # both classes occur


@pytest.mark.data
def test_default_model_separates_real_faces(shared_datasets, tmp_path):
    """A floor, not the target: 200 external faces through the real pipeline; the card has the real figures."""
    pipeline = Pipeline(create_detector("blazeface"), GenderClassifier(BUNDLED_MODEL), 1280, 40_000_000)
    correct = {"female": [], "male": []}
    with tarfile.open(shared_datasets / "gender_dataset_face.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        for member in members[:: len(members) // 200][:200]:
            truth = "female" if "/woman/" in member.name else "male"
            image = decode_image(tar.extractfile(member).read(), 40_000_000)
            pad = max(image.bgr.shape[:2]) // 3  # these are tight crops; give the detector some room
            padded = np.pad(image.bgr, ((pad, pad), (pad, pad), (0, 0)))
            faces = pipeline.predict(type(image)(padded, image.format), PredictOptions()).faces
            correct[truth].append(bool(faces) and faces[0].label == truth)
    balanced = np.mean([np.mean(v) for v in correct.values()])
    assert balanced >= 0.85, f"balanced accuracy {balanced:.3f} on 200 external faces"
