"""A reader for the files dlib's DNN module serializes (``dlib::serialize(net)``), in numpy alone.

dlib writes a network top-down as nested prefixes (the loss layer, then one version number per layer down to
the input layer) and then each layer's details bottom-up, each followed by its training state. This reader
walks that stream and returns the computational layers in input-to-output order with their parameters, so
that a builder can map them onto an equivalent Keras graph. It reads what the dlib ResNet face descriptor
(``dlib_face_recognition_resnet_model_v1.dat``) uses: an RGB input, ``con_``, ``affine_``, ``relu_``,
``max_pool_``/``avg_pool_``, ``add_prev_`` and ``fc_`` layers and the ``loss_metric_`` loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


class DlibFormatError(ValueError):
    """The bytes are not a dlib network of the kinds this reader knows."""


@dataclass
class DlibLayer:
    """One layer's kind (dlib's name without its version suffix), settings and parameter arrays."""

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """The input layer's settings, the layers from input to output, and the loss layer's settings."""

    input: dict[str, Any]
    layers: list[DlibLayer]
    loss: dict[str, Any]


class _Stream:
    """dlib's primitive encodings: variable-length integers, mantissa/exponent floats, strings, raw tensors."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise DlibFormatError("unexpected end of file")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n]

    def integer(self) -> int:
        # One control byte: the low nibble counts the little-endian bytes that follow, the top bit is the sign.
        control = self.byte()
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at {self.pos - 1}")
        raw = self.data[self.pos : self.pos + size]
        if len(raw) != size:
            raise DlibFormatError("unexpected end of file")
        self.pos += size
        value = int.from_bytes(raw, "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        # dlib stores a float or double as an integer mantissa and a power-of-two exponent.
        mantissa = self.integer()
        exponent = self.integer()
        return float(np.ldexp(float(mantissa), exponent))

    def boolean(self) -> bool:
        value = self.byte()
        if value not in (ord("0"), ord("1")):
            raise DlibFormatError(f"bad boolean byte {value:#x} at {self.pos - 1}")
        return value == ord("1")

    def string(self) -> str:
        size = self.integer()
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw.decode("ascii", errors="replace")

    def tensor(self) -> npt.NDArray[np.float32]:
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version} at {self.pos}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise DlibFormatError("unexpected end of file inside a tensor")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos = end
        return values.reshape(shape)

    def alias_shape(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise DlibFormatError(f"unsupported alias_tensor version {version} at {self.pos}")
        return (self.integer(), self.integer(), self.integer(), self.integer())


def _con(s: _Stream) -> DlibLayer:
    params = s.tensor().ravel()
    filters, rows, cols = s.integer(), s.integer(), s.integer()
    stride_y, stride_x, pad_y, pad_x = s.integer(), s.integer(), s.integer(), s.integer()
    shape = s.alias_shape()
    s.alias_shape()
    for _ in range(4):
        s.real()  # learning-rate and weight-decay multipliers
    weights = params[: int(np.prod(shape))].reshape(shape)  # (filters, channels, rows, cols)
    biases = params[weights.size :]
    if weights.shape[:1] != (filters,) or weights.shape[2:] != (rows, cols) or biases.size != filters:
        raise DlibFormatError(f"con_ parameters of shape {params.shape} do not fit {filters}x{rows}x{cols} filters")
    settings = {"filters": filters, "kernel": (rows, cols), "strides": (stride_y, stride_x), "padding": (pad_y, pad_x)}
    return DlibLayer("con", settings, {"weights": weights, "biases": biases})


def _affine(s: _Stream) -> DlibLayer:
    params = s.tensor().ravel()
    gamma_shape = s.alias_shape()
    s.alias_shape()
    mode = s.integer()
    channels = int(np.prod(gamma_shape))
    if params.size != 2 * channels:
        raise DlibFormatError(f"affine_ holds {params.size} parameters for {channels} channels")
    return DlibLayer("affine", {"mode": mode}, {"gamma": params[:channels], "beta": params[channels:]})


def _pool(kind: str) -> Any:
    def read(s: _Stream) -> DlibLayer:
        rows, cols, stride_y, stride_x, pad_y, pad_x = (s.integer() for _ in range(6))
        settings = {"size": (rows, cols), "strides": (stride_y, stride_x), "padding": (pad_y, pad_x)}
        return DlibLayer(kind, settings)

    return read


def _fc(s: _Stream) -> DlibLayer:
    outputs, inputs = s.integer(), s.integer()
    params = s.tensor()
    s.alias_shape()
    s.alias_shape()
    bias_mode = s.integer()  # 0: with a bias row, 1: without
    for _ in range(4):
        s.real()
    matrix = params.reshape(params.shape[0], params.shape[1])
    weights, biases = matrix[:inputs], matrix[inputs:]
    if weights.shape != (inputs, outputs) or (bias_mode == 0) != (len(biases) == 1):
        raise DlibFormatError(f"fc_ parameters of shape {params.shape} do not fit {inputs} -> {outputs}")
    arrays = {"weights": weights} | ({"biases": biases[0]} if bias_mode == 0 else {})
    return DlibLayer("fc", {"outputs": outputs}, arrays)


_READERS: dict[str, Any] = {
    "con_4": _con,
    "affine_": _affine,
    "relu_": lambda s: DlibLayer("relu"),
    "max_pool_2": _pool("max_pool"),
    "avg_pool_2": _pool("avg_pool"),
    "add_prev_": lambda s: DlibLayer("add_prev"),
    "fc_2": _fc,
}


def _trailer(s: _Stream, bottom_version: int | None) -> None:
    """Skip the training state that follows each layer's details: three flags and the cached tensors."""
    for _ in range(3):
        s.boolean()
    for _ in range(3):  # x_grad, cached output, and params_grad (grad_final below the first layer)
        s.tensor()
    if bottom_version is not None and bottom_version >= 3:
        s.integer()  # the sample expansion factor


def read_network(data: bytes) -> DlibNetwork:
    """Parse a serialized dlib network into its input settings, layers (input to output) and loss settings."""
    s = _Stream(data)
    if s.integer() != 1:
        raise DlibFormatError("not a dlib loss-layer network (version 1 expected first)")
    loss_name = s.string()
    if not loss_name.startswith("loss_metric_"):
        raise DlibFormatError(f"unsupported loss layer {loss_name!r}")
    loss = {"kind": "metric", "margin": s.real(), "distance_threshold": s.real()}
    # One version per nested layer down to the input layer, whose details start with a string.
    versions = []
    while s.peek(7)[2:] != b"input":
        versions.append(s.integer())
        if len(versions) > 100_000:
            raise DlibFormatError("no input layer found")
    name = s.string()
    if name != "input_rgb_image_sized":
        raise DlibFormatError(f"unsupported input layer {name!r}")
    means = (s.real(), s.real(), s.real())
    rows, cols = s.integer(), s.integer()
    network_input = {"kind": "rgb", "means": means, "rows": rows, "cols": cols}
    layers = []
    bottom: int | None = versions[-1]
    while s.pos < len(data):
        name = s.string()
        reader = _READERS.get(name)
        if reader is None:
            raise DlibFormatError(f"unsupported layer {name!r} at byte {s.pos}")
        layers.append(reader(s))
        _trailer(s, bottom)
        bottom = None
    return DlibNetwork(network_input, layers, loss)


def read_network_file(path: Path) -> DlibNetwork:
    """``read_network`` of a file."""
    return read_network(path.read_bytes())
