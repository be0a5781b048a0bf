"""Training-time augmentation of whole batches: framing, colour, degradation and occlusion.

Training faces are cut once, by the serving crop function, at a wide margin (``CONTEXT_MARGIN``). Each
epoch draws a new square out of that context crop around the face, at a random margin and position, so
the model sees every framing it may be served instead of learning one. A share of the crops also gets a
random image border: the pixels beyond it are the border's own, carried outwards, as the serving crop
fills a region that runs past a photo's edge (``CropSpec.outside = "edge"``). Tight sources, whose crops
run past their edges, therefore look like any other source.

Every random draw is stateless, keyed by one (2,) seed per batch, so a batch is the same whenever it is
drawn again: a resumed run continues with the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import tensorflow as tf

from service.preprocess import CropSpec

CONTEXT_MARGIN = 0.5
# ITU-R BT.601 luma, the weights OpenCV uses for BGR2GRAY, in RGB order.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augment:
    """The augmentation recipe; each probability is per image, and 0 turns a step off."""

    margin_low: float = 0.05
    margin_high: float = 0.45
    shift: float = 0.06  # centre jitter, fraction of the face square
    flip: float = 0.5
    edge: float = 0.2  # share of crops given a random image border within their outer 30%
    brightness: float = 0.15  # +- fraction of full scale
    contrast: float = 0.3  # factor 1 +- this
    saturation: float = 0.4  # factor 1 +- this
    greyscale: float = 0.1
    blur: float = 0.2
    jpeg: float = 0.2  # re-compressed at quality 30..90
    erase: float = 0.25  # a rectangle of 2..12% of the crop replaced by noise

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin_low <= self.margin_high <= CONTEXT_MARGIN:
            raise ValueError(f"margins must satisfy 0 <= low <= high <= {CONTEXT_MARGIN}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def off(cls, margin: float) -> Augment:
        """No augmentation at all: the serving framing at ``margin``, centred."""
        zero = {k: 0.0 for k in asdict(cls()) if k not in ("margin_low", "margin_high")}
        return cls(margin_low=margin, margin_high=margin, **zero)


def context_spec(spec: CropSpec, augment: Augment) -> CropSpec:
    """The wide crop cut once per training face: large enough that the tightest drawn square keeps
    the serving resolution."""
    size = math.ceil(spec.size * (1.0 + 2.0 * CONTEXT_MARGIN) / (1.0 + 2.0 * augment.margin_low))
    return replace(spec, size=size, margin=CONTEXT_MARGIN)


def _uniform(seed: tf.Tensor, k: int, shape: Any, low: float = 0.0, high: float = 1.0) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed + tf.constant([0, k], tf.int64), minval=low, maxval=high)


def _chance(seed: tf.Tensor, k: int, n: tf.Tensor, p: float) -> tf.Tensor:
    return _uniform(seed, k, [n]) < p


def _per_image(values: tf.Tensor) -> tf.Tensor:
    return tf.reshape(values, [-1, 1, 1, 1])


def augment_batch(images: tf.Tensor, seed: tf.Tensor, spec: CropSpec, augment: Augment) -> tf.Tensor:
    """Context crops (N, S, S, C) uint8 -> model inputs (N, size, size, C) float32, scaled as ``spec`` says."""
    seed = tf.cast(seed, tf.int64)
    x = tf.cast(images, tf.float32)
    n = tf.shape(x)[0]
    size = spec.size
    x = _frame(x, seed, n, size, augment)
    if augment.flip:
        x = tf.where(_per_image(_chance(seed, 10, n, augment.flip)), tf.reverse(x, axis=[2]), x)
    if augment.edge:
        x = _edge(x, seed, n, size, augment.edge)
    if spec.channels == 3:
        x = _colour(x, seed, n, augment)
    elif augment.brightness or augment.contrast:
        x = _colour(x, seed, n, replace(augment, saturation=0.0, greyscale=0.0))
    if augment.blur:
        x = _blur(x, seed, n, augment.blur)
    if augment.jpeg:
        x = _jpeg(x, seed, n, augment.jpeg)
    if augment.erase:
        x = _erase(x, seed, n, size, augment.erase)
    return tf.clip_by_value(x, 0.0, 255.0) * spec.scale + spec.offset


def _frame(x: tf.Tensor, seed: tf.Tensor, n: tf.Tensor, size: int, augment: Augment) -> tf.Tensor:
    """A square around the face at a random margin and centre, resampled to ``size``."""
    face = 1.0 / (1.0 + 2.0 * CONTEXT_MARGIN)  # the face square's side, as a fraction of the context crop
    margin = _uniform(seed, 1, [n], augment.margin_low, augment.margin_high)
    half = face * (1.0 + 2.0 * margin) / 2.0
    room = tf.maximum(0.5 - half, 0.0)
    cx = 0.5 + tf.clip_by_value(_uniform(seed, 2, [n], -augment.shift, augment.shift) * face, -room, room)
    cy = 0.5 + tf.clip_by_value(_uniform(seed, 3, [n], -augment.shift, augment.shift) * face, -room, room)
    edges = tf.stack([cy - half, cx - half, cy + half, cx + half], axis=1)  # fractions of the crop's side
    # cv2.resize samples a region's pixels at their centres; crop_and_resize samples from the box's first to
    # its last pixel centre. Moving the edges in by half an output pixel makes the two agree, so a centred
    # square at the serving margin is the serving crop's geometry.
    source = tf.cast(tf.shape(x)[1], tf.float32)
    inset = (edges[:, 2:] - edges[:, :2]) / (2.0 * size)
    first, last = edges[:, :2] + inset, edges[:, 2:] - inset
    boxes = (tf.concat([first, last], axis=1) * source - 0.5) / (source - 1.0)
    return tf.image.crop_and_resize(x, boxes, tf.range(n), (size, size), method="bilinear")


def _edge(x: tf.Tensor, seed: tf.Tensor, n: tf.Tensor, size: int, p: float) -> tf.Tensor:
    """In a share ``p`` of the crops, one side beyond a random line within the outer 30% copies that line."""
    chosen = _chance(seed, 20, n, p)
    side = tf.cast(tf.floor(_uniform(seed, 21, [n], 0.0, 4.0)), tf.int32)
    cut = tf.cast(tf.floor(_uniform(seed, 22, [n], 1.0, 0.3 * size)), tf.int32) * tf.cast(chosen, tf.int32)
    zero = tf.zeros_like(cut)
    top, bottom = tf.where(side == 0, cut, zero), tf.where(side == 1, cut, zero)
    left, right = tf.where(side == 2, cut, zero), tf.where(side == 3, cut, zero)
    grid = tf.range(size)[tf.newaxis, :]
    rows = tf.minimum(tf.maximum(grid, top[:, tf.newaxis]), size - 1 - bottom[:, tf.newaxis])
    columns = tf.minimum(tf.maximum(grid, left[:, tf.newaxis]), size - 1 - right[:, tf.newaxis])
    x = tf.gather(x, rows, axis=1, batch_dims=1)
    return tf.gather(x, columns, axis=2, batch_dims=1)


def _grey(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(x * tf.constant(LUMA), axis=-1, keepdims=True)


def _colour(x: tf.Tensor, seed: tf.Tensor, n: tf.Tensor, augment: Augment) -> tf.Tensor:
    b = augment.brightness * 255.0
    x = x + _per_image(_uniform(seed, 30, [n], -b, b))
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    c = augment.contrast
    x = (x - mean) * _per_image(_uniform(seed, 31, [n], 1.0 - c, 1.0 + c)) + mean
    if augment.saturation or augment.greyscale:
        grey = _grey(x)
        s = augment.saturation
        factor = _uniform(seed, 32, [n], 1.0 - s, 1.0 + s)
        factor = tf.where(_chance(seed, 33, n, augment.greyscale), 0.0, factor)
        x = grey + (x - grey) * _per_image(factor)
    return x


def _blur(x: tf.Tensor, seed: tf.Tensor, n: tf.Tensor, p: float) -> tf.Tensor:
    """A 5x5 Gaussian (sigma 1) blend of random strength, edges mirrored."""
    taps = tf.exp(-tf.square(tf.range(-2.0, 3.0)) / 2.0)
    taps /= tf.reduce_sum(taps)
    channels = x.shape[-1]
    kernel = tf.tile((taps[:, tf.newaxis] * taps[tf.newaxis, :])[:, :, tf.newaxis, tf.newaxis], [1, 1, channels, 1])
    padded = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="SYMMETRIC")
    blurred = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
    strength = _uniform(seed, 40, [n], 0.4, 1.0) * tf.cast(_chance(seed, 41, n, p), tf.float32)
    return x + _per_image(strength) * (blurred - x)


def _jpeg(x: tf.Tensor, seed: tf.Tensor, n: tf.Tensor, p: float) -> tf.Tensor:
    chosen = _chance(seed, 50, n, p)
    quality = tf.cast(tf.floor(_uniform(seed, 51, [n], 30.0, 91.0)), tf.int32)
    pixels = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)

    def one(item: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, q, take = item
        return tf.cond(take, lambda: tf.image.adjust_jpeg_quality(image, q), lambda: image)

    out = tf.map_fn(one, (pixels, quality, chosen), fn_output_signature=tf.TensorSpec(x.shape[1:], tf.uint8))
    return tf.where(_per_image(chosen), tf.cast(out, tf.float32), x)


def _erase(x: tf.Tensor, seed: tf.Tensor, n: tf.Tensor, size: int, p: float) -> tf.Tensor:
    area = _uniform(seed, 60, [n], 0.02, 0.12)
    aspect = tf.exp(_uniform(seed, 61, [n], math.log(0.5), math.log(2.0)))
    h = tf.minimum(tf.sqrt(area * aspect), 1.0) * size
    w = tf.minimum(tf.sqrt(area / aspect), 1.0) * size
    y0 = _uniform(seed, 62, [n]) * (size - h)
    x0 = _uniform(seed, 63, [n]) * (size - w)
    grid = tf.range(size, dtype=tf.float32)
    inside_y = (grid[tf.newaxis, :] >= y0[:, tf.newaxis]) & (grid[tf.newaxis, :] < (y0 + h)[:, tf.newaxis])
    inside_x = (grid[tf.newaxis, :] >= x0[:, tf.newaxis]) & (grid[tf.newaxis, :] < (x0 + w)[:, tf.newaxis])
    inside = inside_y[:, :, tf.newaxis] & inside_x[:, tf.newaxis, :]
    inside &= _chance(seed, 64, n, p)[:, tf.newaxis, tf.newaxis]
    noise = _uniform(seed, 65, tf.shape(x), 0.0, 255.0)
    return tf.where(inside[:, :, :, tf.newaxis], noise, x)
