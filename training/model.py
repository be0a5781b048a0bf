"""Builders for the gender classifiers; each returns an uncompiled ``keras.Model``.

All three end in a softmax over ``training.datasets.LABELS`` (female, male). mini-Xception and the
plain CNN end in a convolution to one map per class followed by global average pooling, so their
``class_maps`` layer holds class activation maps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
from keras import layers

# The dlib ResNet's own layers, registered so that load_model reads checkpoints built on that backbone.
import training.backbone  # noqa: F401

NUM_CLASSES = 2
CLASS_MAPS_LAYER = "class_maps"


def _check_input(input_shape: tuple[int, int, int], min_side: int) -> None:
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"input must have 1 (grey) or 3 (RGB) channels, got {channels}")
    if min(height, width) < min_side:
        raise ValueError(f"input sides must be at least {min_side} pixels, got {height}x{width}")


def _conv_bn_relu(x: keras.KerasTensor, filters: int, name: str, strides: int = 1) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _class_map_head(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    x = layers.Conv2D(num_classes, 3, padding="same", name=CLASS_MAPS_LAYER)(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Softmax(name="probabilities")(x)


def build_mini_xception(
    input_shape: tuple[int, int, int] = (64, 64, 3), num_classes: int = NUM_CLASSES, width: float = 1.0
) -> keras.Model:
    """mini-Xception (Arriaga et al., 2017): residual depthwise-separable blocks, BN, ReLU, GAP, softmax.

    ``width`` multiplies every layer's filters (1.0: the paper's 8 to 128)."""
    _check_input(input_shape, 16)
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn_relu(inputs, round(8 * width), "stem1")
    x = _conv_bn_relu(x, round(8 * width), "stem2")
    for block, filters in enumerate((round(f * width) for f in (16, 32, 64, 128)), start=1):
        name = f"block{block}"
        residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, name=f"{name}_skip")(x)
        residual = layers.BatchNormalization(name=f"{name}_skip_bn")(residual)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep1")(x)
        x = layers.BatchNormalization(name=f"{name}_sep1_bn")(x)
        x = layers.ReLU(name=f"{name}_sep1_relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep2")(x)
        x = layers.BatchNormalization(name=f"{name}_sep2_bn")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
        x = layers.Add(name=f"{name}_add")([x, residual])
    return keras.Model(inputs, _class_map_head(x, num_classes), name="mini_xception")


def build_plain_cnn(input_shape: tuple[int, int, int] = (64, 64, 3), num_classes: int = NUM_CLASSES) -> keras.Model:
    """A plain fully convolutional CNN: pairs of 3x3 conv-BN-ReLU, max pooling, dropout, GAP."""
    _check_input(input_shape, 16)
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for block, filters in enumerate((16, 32, 64, 96), start=1):
        x = _conv_bn_relu(x, filters, f"block{block}a")
        x = _conv_bn_relu(x, filters, f"block{block}b")
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(0.1 * block, name=f"block{block}_dropout")(x)
    return keras.Model(inputs, _class_map_head(x, num_classes), name="plain_cnn")


def build_mobilenet_v2(
    input_shape: tuple[int, int, int] = (96, 96, 3),
    num_classes: int = NUM_CLASSES,
    alpha: float = 0.35,
    weights: Path | None = None,
) -> keras.Model:
    """A MobileNetV2 backbone (random init, or a local ImageNet weights file) with a softmax head."""
    _check_input(input_shape, 32)
    if weights is not None and not weights.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights file not found: {weights}")
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if input_shape[2] == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    # MobileNetV2 expects pixels in -1..1; our inputs are 0..1.
    x = layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(x)
    backbone = keras.applications.MobileNetV2(
        input_shape=(*input_shape[:2], 3),
        alpha=alpha,
        include_top=False,
        weights=str(weights) if weights else None,
    )
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "mini_xception": build_mini_xception,
    "plain_cnn": build_plain_cnn,
    "mobilenet_v2": build_mobilenet_v2,
}


def build_model(arch: str, input_shape: tuple[int, int, int], width: float = 1.0) -> keras.Model:
    """Build the named architecture for ``input_shape``; ``width`` scales mini-Xception's filters."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(BUILDERS)}")
    if width != 1.0:
        if arch != "mini_xception":
            raise ValueError(f"--width applies to mini_xception only, not {arch}")
        return build_mini_xception(input_shape=input_shape, width=width)
    return BUILDERS[arch](input_shape=input_shape)


def has_class_maps(model: keras.Model) -> bool:
    return any(layer.name == CLASS_MAPS_LAYER for layer in model.layers)
