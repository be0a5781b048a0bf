"""Why the model said what it said: Grad-CAM and guided backpropagation on faces, drawn as one PNG per face.

Faces are found and cut exactly as the service does (``service.detector``, ``service.preprocess``), or taken
from the crop cache of an evaluation split, picked by a fixed seed before looking at them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from keras import layers

from service.calibration import apply_temperature
from service.config import Settings
from service.detector import create_detector
from service.images import decode_image
from service.preprocess import CropSpec, crop_face, to_model_input
from service.render import scale_map
from training.datasets import LABELS
from training.export import crop_spec_of, run_dir_files
from training.model import CLASS_MAPS_LAYER, has_class_maps
from training.train import TrainConfig, load_samples, load_split_data

INDEX_NAME = "index.json"


class GuidedReLU(layers.ReLU):
    """A ReLU whose backward pass lets through only positive gradients at positive inputs (guided backprop)."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        forward = super().call

        @tf.custom_gradient  # type: ignore[misc]
        def guided(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
            def backward(upstream: tf.Tensor) -> tf.Tensor:
                passes = (upstream > 0) & (x > self.threshold)
                if self.max_value is not None:
                    passes &= x < self.max_value
                return tf.where(passes, upstream, tf.zeros_like(upstream))

            return forward(x), backward

        return guided(inputs)


def _copy_layer(layer: layers.Layer) -> layers.Layer:
    kind = GuidedReLU if isinstance(layer, layers.ReLU) else type(layer)
    return kind.from_config(layer.get_config())


def score_model(model: keras.Model) -> keras.Model:
    """The model's input to (last feature map, pre-softmax class scores): what Grad-CAM and guided backprop use."""
    head = model.get_layer("probabilities")
    features = model.get_layer(CLASS_MAPS_LAYER if has_class_maps(model) else "pool").input
    # A softmax Dense head's logits are its affine part, taken before the activation.
    dense = isinstance(head, layers.Dense)
    scores = keras.ops.matmul(head.input, head.kernel) + head.bias if dense else head.input
    return keras.Model(model.input, [features, scores])


def grad_cam(model: keras.Model, x: npt.NDArray[np.float32], classes: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Grad-CAM (Selvaraju et al.) of each face for its class: ReLU of the gradient-weighted last feature maps."""
    scorer = score_model(model)
    with tf.GradientTape() as tape:
        features, scores = scorer(x, training=False)
        chosen = tf.gather(scores, classes, axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    return np.asarray(tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)), dtype=np.float32)


def guided_backprop(
    model: keras.Model, x: npt.NDArray[np.float32], classes: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Guided backpropagation (Springenberg et al.): the input gradient of each face's class score, shape of x."""
    guided = keras.models.clone_model(model, clone_function=_copy_layer, recursive=True)
    guided.set_weights(model.get_weights())
    scorer = score_model(guided)
    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        _, scores = scorer(inputs, training=False)
        chosen = tf.gather(scores, classes, axis=1, batch_dims=1)
    return np.asarray(tape.gradient(chosen, inputs), dtype=np.float32)


@dataclass
class Explanation:
    """Everything one sheet shows for one face."""

    title: str
    crop: npt.NDArray[np.uint8]  # the model's input before scaling, RGB or grey
    probabilities: npt.NDArray[np.float64]  # calibrated, in LABELS order
    grad_cam: npt.NDArray[np.float32]  # (rows, columns) over the crop
    guided: npt.NDArray[np.float32]  # same shape as crop
    class_map: npt.NDArray[np.float32] | None  # the served map of the predicted label, if the model has one

    @property
    def label(self) -> str:
        return LABELS[int(self.probabilities.argmax())]


class Explainer:
    """A checkpoint with the crop it was trained on and its calibration temperature."""

    def __init__(self, checkpoint: Path) -> None:
        self.model = keras.models.load_model(checkpoint, compile=False)
        run = run_dir_files(checkpoint)
        self.spec: CropSpec = crop_spec_of(run, self.model)
        self.temperature = float(run.get("evaluation", {}).get("temperature", 1.0))
        self.run_config = run.get("config")

    def explain(self, crops: npt.NDArray[np.uint8], titles: list[str]) -> list[Explanation]:
        """Explain each crop for the label the model predicts."""
        x = to_model_input(crops, self.spec)
        raw = self.model.predict(x, verbose=0)
        probs = apply_temperature(raw, self.temperature)
        classes = probs.argmax(axis=1).astype(np.int64)
        cams = grad_cam(self.model, x, classes)
        guided = guided_backprop(self.model, x, classes)
        maps: npt.NDArray[np.float32] | None = None
        if has_class_maps(self.model):
            pre_pooling = keras.Model(self.model.input, self.model.get_layer(CLASS_MAPS_LAYER).output)
            maps = np.asarray(pre_pooling.predict(x, verbose=0), dtype=np.float32)
        return [
            Explanation(titles[i], crops[i], probs[i], cams[i], guided[i], None if maps is None else maps[i, :, :, c])
            for i, c in enumerate(classes)
        ]

    def faces_in_images(self, paths: list[Path]) -> tuple[npt.NDArray[np.uint8], list[str]]:
        """Every face the service would report in each image, cut with the serving crop."""
        settings = Settings()
        detector = create_detector(settings.detector)
        crops, titles = [], []
        for path in paths:
            image = decode_image(path.read_bytes(), settings.max_pixels)
            found = detector.detect(image.bgr, settings.detection_threshold)
            kept = [d for d in found if min(d.box.width, d.box.height) >= settings.min_face_size]
            for number, det in enumerate(kept[: settings.max_faces], start=1):
                crops.append(crop_face(image.bgr, det.box, self.spec))
                titles.append(f"{path.name}, face {number}")
        return np.array(crops, dtype=np.uint8).reshape(-1, *self.spec.shape), titles


def _guided_image(gradient: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The usual display of an input gradient: centred on grey, contrast by its spread, clipped to 0..1."""
    centred = (gradient - gradient.mean()) / (gradient.std() + 1e-8)
    return np.clip(0.5 + 0.15 * centred, 0.0, 1.0)


def draw_sheet(explanation: Explanation, temperature: float, path: Path, truth: str | None = None) -> None:
    """Write one PNG: the crop, Grad-CAM, the served class map, guided backprop and guided Grad-CAM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = explanation.crop.shape[0]
    grey = explanation.crop.shape[2] == 1
    crop = explanation.crop[:, :, 0] if grey else explanation.crop
    cam = scale_map(explanation.grad_cam, size, size)
    guided = _guided_image(explanation.guided)
    panels: list[tuple[str, Any, npt.NDArray[Any] | None]] = [
        ("face crop (model input)", crop, None),
        (f"Grad-CAM: {explanation.label}", crop, cam),
    ]
    if explanation.class_map is not None:
        panels.append((f"class map: {explanation.label}", crop, scale_map(explanation.class_map, size, size)))
    panels += [
        ("guided backprop", guided[:, :, 0] if grey else guided, None),
        ("guided Grad-CAM", _guided_image(explanation.guided * cam[:, :, np.newaxis]).mean(axis=2), None),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.1 * len(panels), 2.55))
    for ax, (name, image, heat) in zip(axes, panels, strict=True):
        ax.imshow(
            image,
            cmap="gray" if image.ndim == 2 else None,
            vmin=0,
            vmax=255 if image.dtype == np.uint8 else 1,
            interpolation="nearest",
        )
        if heat is not None:
            ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    probs = " / ".join(f"{label} {100 * p:.1f}%" for label, p in zip(LABELS, explanation.probabilities, strict=True))
    calibration = f"calibrated, T={temperature:.2f}" if temperature != 1.0 else "uncalibrated"
    heading = f"{explanation.title}: {probs} ({calibration})" + (f"; truth: {truth}" if truth else "")
    fig.suptitle(heading, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _file_name(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title).strip("-").replace("--", "-") + ".png"


def explain_images(checkpoint: Path, images: list[Path], out_dir: Path) -> list[Path]:
    """One sheet per face found in ``images``; returns the PNGs written."""
    explainer = Explainer(checkpoint)
    crops, titles = explainer.faces_in_images(images)
    written, entries = [], []
    for explanation in explainer.explain(crops, titles) if len(crops) else []:
        path = out_dir / _file_name(explanation.title)
        draw_sheet(explanation, explainer.temperature, path)
        written.append(path)
        entries.append({"sheet": path.name, "face": explanation.title, **_rounded(explanation.probabilities)})
    index = {"checkpoint": str(checkpoint), "images": [str(p) for p in images], "sheets": entries}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    print(f"{len(written)} faces in {len(images)} images; sheets in {out_dir}")
    return written


def _rounded(probabilities: npt.NDArray[np.float64]) -> dict[str, dict[str, float]]:
    return {"probabilities": dict(zip(LABELS, np.round(probabilities, 4).tolist(), strict=True))}


def pick_cases(
    predicted: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], count: int, seed: int
) -> dict[str, list[int]]:
    """The first ``count`` correct and ``count`` wrong indices in an order fixed by ``seed`` alone."""
    order = np.random.default_rng(seed).permutation(len(truth))
    right = predicted[order] == truth[order]
    return {"correct": order[right][:count].tolist(), "wrong": order[~right][:count].tolist()}


def explain_split(checkpoint: Path, split: str, seed: int, count: int, out_dir: Path) -> dict[str, Any]:
    """Sheets for the first ``count`` correct and wrong faces of a split; writes index.json beside them."""
    explainer = Explainer(checkpoint)
    if explainer.run_config is None:
        raise FileNotFoundError(f"no config.json beside {checkpoint}: the split's data is unknown")
    config = TrainConfig(**explainer.run_config)
    samples = [s for s in load_samples(config) if s.split == split]
    data = load_split_data(samples, config)[0][split]
    crops = np.clip(np.rint((data.x - explainer.spec.offset) / explainer.spec.scale), 0, 255).astype(np.uint8)
    predicted = explainer.model.predict(data.x, batch_size=256, verbose=0).argmax(axis=1)
    cases = pick_cases(predicted, data.y, count, seed)
    index: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split, "seed": seed, "faces": len(data.y)}
    index["accuracy"] = float((predicted == data.y).mean())
    for kind, chosen in cases.items():
        titles = [f"{kind} {n}, {data.samples[i].source}" for n, i in enumerate(chosen, start=1)]
        explanations = explainer.explain(crops[chosen], titles) if chosen else []
        index[kind] = []
        for n, (i, explanation) in enumerate(zip(chosen, explanations, strict=True), start=1):
            sample, path = data.samples[i], out_dir / f"{kind}-{n}.png"
            draw_sheet(explanation, explainer.temperature, path, truth=LABELS[sample.label])
            index[kind].append(
                {
                    "sheet": path.name,
                    "source": sample.source,
                    "file": sample.path.name,
                    "truth": LABELS[sample.label],
                    **_rounded(explanation.probabilities),
                }
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    print(f"{split}: {index['faces']} faces; sheets for {len(cases['correct'])} correct, {len(cases['wrong'])} wrong")
    return index
