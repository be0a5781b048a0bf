"""External end-to-end evaluation on photo sets written here from real face photos, with the real BlazeFace
detector and the bundled ONNX model; only the .keras test needs TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from service.calibration import apply_temperature
from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL
from service.detection import Detection, FaceDetector
from service.detector import create_detector
from service.preprocess import preprocess_faces
from tests.conftest import ROOT, photo_variants, read_fixture
from training.__main__ import main
from training.datasets import Sample, load_spec
from training.external import Predict, classify_photos, evaluate_photos, find_face, read_photo

# Where each face is in its photo (x0, y0, x1, y1), checked by eye; the male face is the less confident one.
ASTRONAUT_FACE = (181, 64, 269, 175)
CAMERA_FACE = (198, 112, 258, 194)
EXIF_ROTATE_CLOCKWISE = 6
Photo = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def woman() -> Photo:
    return read_fixture("astronaut.jpg")


@pytest.fixture(scope="module")
def man() -> Photo:
    return np.asarray(cv2.imread(str(ROOT / "benchmarks" / "photos" / "camera.jpg")), np.uint8)


@pytest.fixture(scope="module")
def onnx() -> GenderClassifier:
    return GenderClassifier(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def predict(onnx: GenderClassifier) -> Predict:
    return lambda x: np.asarray(onnx.session.run([onnx.output_name], {onnx.input_name: x})[0])


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return create_detector("blazeface")


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory: pytest.TempPathFactory, woman: Photo, man: Photo) -> Path:
    """folder:DIR with two women, two men and, labelled female, a photo with no face."""
    root = tmp_path_factory.mktemp("folder_set")
    for gender, image in (("female", woman), ("male", man)):
        (root / gender).mkdir()
        for i, photo in enumerate(photo_variants(image, 2)):
            cv2.imwrite(str(root / gender / f"{i}.jpg"), photo)
    cv2.imwrite(str(root / "female" / "coffee.jpg"), read_fixture("coffee.jpg"))
    return root


@pytest.fixture(scope="module")
def two_faces_csv(tmp_path_factory: pytest.TempPathFactory, woman: Photo, man: Photo) -> Path:
    """csv:FILE of one photo holding a woman and a man, one row per face with its box, stored as a phone does:
    turned on its side with an EXIF orientation that turns it upright."""
    root = tmp_path_factory.mktemp("csv_set")
    upright = np.concatenate([woman, man], axis=1)
    stored = Image.fromarray(upright[:, :, ::-1]).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_CLOCKWISE
    stored.save(root / "pair.jpg", quality=95, exif=exif)
    x0, y0, x1, y1 = CAMERA_FACE
    width = woman.shape[1]
    rows = [("female", ASTRONAUT_FACE), ("male", (x0 + width, y0, x1 + width, y1))]
    with_boxes = "path,gender,face_x,face_y,face_w,face_h\n" + "".join(
        f"pair.jpg,{g},{a},{b},{c - a},{d - b}\n" for g, (a, b, c, d) in rows
    )
    (root / "labels.csv").write_text(with_boxes)
    (root / "no_boxes.csv").write_text("path,gender\npair.jpg,female\npair.jpg,male\n")
    return root


def load(spec: str, tmp_path: Path) -> list[Sample]:
    return load_spec(spec, tmp_path / "cache", tmp_path / "shared")


def test_folder_set_counts_a_missed_face_as_an_error(
    folder_set: Path, predict: Predict, onnx: GenderClassifier, detector: FaceDetector, tmp_path: Path
) -> None:
    samples = load(f"folder:{folder_set}", tmp_path)
    result = evaluate_photos(samples, predict, onnx.spec, detector, temperature=onnx.temperature, labels=onnx.labels)
    own = f"{onnx.spec.margin:g}"
    assert list(result) == [own]  # the model's own margin
    figures = result[own]
    assert (figures["images"], figures["faces_found"], figures["detection_rate"]) == (5, 4, 0.8)
    assert figures["recall"] == {"female": pytest.approx(2 / 3), "male": 1.0}
    assert figures["balanced_accuracy"] == pytest.approx(5 / 6)
    assert figures["accuracy"] == pytest.approx(0.8)
    found = figures["found_faces"]
    assert (found["balanced_accuracy"], found["accuracy"], found["recall"]) == (1.0, 1.0, {"female": 1.0, "male": 1.0})
    # The miss is scored as a confident wrong answer, so it raises the ECE of all photos.
    assert 0.0 <= found["ece"] < figures["ece"] <= 1.0
    json.dumps(result)


def test_one_class_folder_has_no_recall_for_the_absent_class(
    folder_set: Path, predict: Predict, onnx: GenderClassifier, detector: FaceDetector, tmp_path: Path
) -> None:
    women = [s for s in load(f"folder:{folder_set}", tmp_path) if s.gender == "female" and "coffee" not in s.path.name]
    (tmp_path / "women" / "woman").mkdir(parents=True)
    for sample in women:
        (tmp_path / "women" / "woman" / sample.path.name).write_bytes(sample.path.read_bytes())
    samples = load(f"folder:{tmp_path / 'women'}", tmp_path)
    figures = evaluate_photos(samples, predict, onnx.spec, detector, labels=onnx.labels)[f"{onnx.spec.margin:g}"]
    assert figures["recall"] == {"female": 1.0, "male": None}
    assert figures["balanced_accuracy"] == figures["found_faces"]["balanced_accuracy"] == 1.0


def test_upright_decode_and_box_matching_pick_the_labelled_face(
    two_faces_csv: Path, predict: Predict, onnx: GenderClassifier, detector: FaceDetector, tmp_path: Path
) -> None:
    samples = load(f"csv:{two_faces_csv / 'labels.csv'}", tmp_path)
    assert read_photo(samples[0]).shape == (512, 1024, 3)  # turned upright by its EXIF orientation
    man = samples[1]
    assert man.region is not None
    face = find_face(read_photo(man), detector, man.region)
    assert face is not None
    assert man.region[0] <= face.box.x + face.box.width / 2 <= man.region[2]
    by_box = evaluate_photos(samples, predict, onnx.spec, detector, labels=onnx.labels)[f"{onnx.spec.margin:g}"]
    assert by_box["recall"] == {"female": 1.0, "male": 1.0}
    # Without boxes both rows take the most confident face, the woman's: the man's row goes wrong.
    unboxed = load(f"csv:{two_faces_csv / 'no_boxes.csv'}", tmp_path)
    most_confident = evaluate_photos(unboxed, predict, onnx.spec, detector, labels=onnx.labels)[f"{onnx.spec.margin:g}"]
    assert most_confident["recall"] == {"female": 1.0, "male": 0.0}


class CountingDetector:
    def __init__(self, inner: FaceDetector) -> None:
        self.inner, self.name, self.default_threshold, self.calls = inner, inner.name, inner.default_threshold, 0

    def detect(self, image: Photo, threshold: float | None = None) -> list[Detection]:
        self.calls += 1
        return self.inner.detect(image, threshold)


def test_margins_give_one_result_each_from_one_detection_per_photo(
    folder_set: Path, predict: Predict, onnx: GenderClassifier, detector: FaceDetector, tmp_path: Path
) -> None:
    samples = load(f"folder:{folder_set}", tmp_path)
    counting = CountingDetector(detector)
    result = evaluate_photos(samples, predict, onnx.spec, counting, [0.1, 0.25, 0.4], labels=onnx.labels)
    assert list(result) == ["0.1", "0.25", "0.4"]
    assert counting.calls == len(samples)
    assert all(r["images"] == 5 and r["faces_found"] == 4 for r in result.values())
    assert len({r["ece"] for r in result.values()}) == 3  # each margin crops, and scores, its own way


def test_flip_averages_raw_probabilities_before_the_temperature(
    folder_set: Path, predict: Predict, onnx: GenderClassifier, detector: FaceDetector, tmp_path: Path
) -> None:
    sample = load(f"folder:{folder_set}", tmp_path)[0]
    image = read_photo(sample)
    face = find_face(image, detector)
    assert face is not None
    batch = preprocess_faces(image, [face.box], onnx.spec, [face.keypoints])
    mean = (predict(batch).astype(np.float64) + predict(batch[:, :, ::-1])) / 2
    _, probs = classify_photos([sample], predict, {"plain": onnx.spec}, detector, flip=True, temperature=2.0)
    np.testing.assert_allclose(probs["plain"], apply_temperature(mean, 2.0), rtol=1e-6)


def test_pad_maps_the_face_back_into_a_tight_crop(woman: Photo, detector: FaceDetector) -> None:
    x0, y0, x1, y1 = ASTRONAUT_FACE
    tight = np.ascontiguousarray(woman[y0 - 10 : y1 + 5, x0 - 5 : x1 + 5])
    face = find_face(tight, detector, pad=0.3)
    assert face is not None
    assert abs(face.box.x) < 15 and abs(face.box.y) < 15
    assert face.box.width > 0.8 * tight.shape[1]


def test_cli_writes_external_json_without_the_training_data(
    folder_set: Path, two_faces_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(BUNDLED_MODEL), "--external", f"folder:{folder_set}"]
    args += ["--external", f"csv:{two_faces_csv / 'labels.csv'}", "--margins", "0.1", "0.2", "--flip"]
    args += ["--out", str(tmp_path / "out"), "--shared-dir", str(tmp_path / "none"), "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "external.json").read_text())
    assert list(report["sets"]) == [f"folder:{folder_set}", f"csv:{two_faces_csv / 'labels.csv'}"]
    assert all(list(margins) == ["0.1", "0.2"] for margins in report["sets"].values())
    assert (report["detector"], report["flip"], report["temperature_from"]) == (
        "blazeface",
        True,
        "the model's metadata",
    )
    out = capsys.readouterr().out
    assert "| photo set | margin | images | faces found |" in out
    assert f"| folder:{folder_set} | 0.2 | 5 | 4 (80.0%) |" in out


@pytest.mark.parametrize(("option", "expected"), [([], None), (["--flip"], True), (["--no-flip"], False)])
def test_flip_follows_how_the_model_is_served_unless_asked(
    folder_set: Path, tmp_path: Path, option: list[str], expected: bool | None
) -> None:
    args = ["evaluate", str(BUNDLED_MODEL), "--external", f"folder:{folder_set}", "--limit", "2", *option]
    assert (
        main([*args, "--out", str(tmp_path), "--shared-dir", str(tmp_path / "none"), "--cache-dir", str(tmp_path)]) == 0
    )
    report = json.loads((tmp_path / "external.json").read_text())
    served = GenderClassifier(BUNDLED_MODEL).flip_average
    assert report["flip"] is (served if expected is None else expected)


def test_an_onnx_model_is_evaluated_without_tensorflow(folder_set: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from training.__main__ import main; "
        f"status = main(['evaluate', {str(BUNDLED_MODEL)!r}, '--external', 'folder:{folder_set}', '--limit', '2', "
        f"'--out', {str(tmp_path)!r}]); "
        "sys.exit(status or 3 * any(m in sys.modules for m in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "external.json").is_file()


def test_cli_refuses_bad_margins_and_unreadable_photos(
    folder_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(BUNDLED_MODEL)
    assert main(["evaluate", model, "--external", f"folder:{folder_set}", "--margins", "1.5"]) == 2
    broken = tmp_path / "broken" / "male"
    broken.mkdir(parents=True)
    (broken / "cut.jpg").write_bytes((folder_set / "male" / "0.jpg").read_bytes()[:16])
    assert main(["evaluate", model, "--external", f"folder:{broken.parent}", "--out", str(tmp_path)]) == 2
    assert "cut.jpg: cannot read the photo" in capsys.readouterr().err


@pytest.mark.train
@pytest.mark.slow
def test_cli_evaluates_a_keras_checkpoint_with_its_run_config(
    folder_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keras = pytest.importorskip("keras", reason="a .keras checkpoint needs the train extra (TensorFlow)")
    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "best.keras")
    (tmp_path / "config.json").write_text(json.dumps({"size": 64, "margin": 0.3, "detector": "blazeface"}))
    assert main(["evaluate", str(tmp_path / "best.keras"), "--external", f"folder:{folder_set}"]) == 0
    report = json.loads((tmp_path / "external.json").read_text())
    assert list(report["sets"][f"folder:{folder_set}"]) == ["0.3"]
    assert report["temperature"] == 1.0
    assert "no evaluation.json" in capsys.readouterr().out
