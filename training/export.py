"""Export a Keras checkpoint to ONNX with tf2onnx, prove parity on real faces, write the metadata."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from service.preprocess import KEYPOINTS, CropSpec
from training.datasets import LABELS
from training.evaluate import CARD_NAME, EXPLANATIONS_DIR, REPORT_DIR
from training.model import CLASS_MAPS_LAYER, has_class_maps

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
CLASS_MAPS_NAME = CLASS_MAPS_LAYER
MAX_PARITY_DIFF = 1e-4
MAX_OPSET = 18
METADATA_SCHEMA = 1


class ParityError(RuntimeError):
    """The ONNX model does not reproduce the Keras model's outputs."""


def run_dir_files(checkpoint: Path) -> dict[str, Any]:
    """Read what train and evaluate wrote beside a checkpoint (config, data report, evaluation)."""
    found: dict[str, Any] = {}
    for key in ("config", "data", "evaluation"):
        path = checkpoint.parent / f"{key}.json"
        if path.is_file():
            found[key] = json.loads(path.read_text())
    return found


def crop_spec_of(run: dict[str, Any], model: keras.Model) -> CropSpec:
    """The crop spec the checkpoint was trained with (from config.json), else one matching its input."""
    config = run.get("config")
    if config is not None:
        template = config.get("template")
        return CropSpec(
            size=config["size"],
            colour=config["colour"],
            margin=config["margin"],
            square=config["square"],
            scale=config.get("scale", 1.0 / 255.0),
            align=config.get("align", False),
            outside=config.get("outside", "black"),
            template=None if template is None else tuple((x, y) for x, y in template),
        )
    _, size, _, channels = model.input_shape
    return CropSpec(size=size, colour="rgb" if channels == 3 else "grey")


def with_class_maps(model: keras.Model) -> keras.Model:
    """The model with its pre-pooling class maps as a second output, when it has them; else the model."""
    if not has_class_maps(model):
        return model
    return keras.Model(model.inputs, [model.outputs[0], model.get_layer(CLASS_MAPS_LAYER).output], name=model.name)


def convert(model: keras.Model, opset: int = 17) -> onnx.ModelProto:
    """Convert with a named, batch-dynamic NHWC float32 input, a named probabilities output and, for
    models with a class-map head, a second output holding the maps."""
    if opset > MAX_OPSET:
        raise ValueError(f"opset {opset} is above {MAX_OPSET}, the highest tf2onnx 1.17 supports")
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME),)
    model_proto, _ = tf2onnx.convert.from_keras(with_class_maps(model), input_signature=spec, opset=opset)
    for output, wanted in zip(model_proto.graph.output, (OUTPUT_NAME, CLASS_MAPS_NAME), strict=False):
        if output.name != wanted:
            for node in model_proto.graph.node:
                node.output[:] = [wanted if name == output.name else name for name in node.output]
            output.name = wanted
    onnx.checker.check_model(model_proto)
    return model_proto


def check_parity(model: keras.Model, onnx_bytes: bytes, faces: npt.NDArray[np.float32]) -> float:
    """Run both models on the same faces; raise ParityError if any output differs by more than 1e-4."""
    if len(faces) == 0:
        raise ParityError("no faces to check parity on")
    expected = with_class_maps(model).predict(faces, batch_size=64, verbose=0)
    expected = expected if isinstance(expected, list | tuple) else [expected]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME, CLASS_MAPS_NAME][: len(expected)], {INPUT_NAME: faces})
    diff = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True))
    if not diff <= MAX_PARITY_DIFF:
        raise ParityError(f"ONNX differs from Keras by {diff:.2e} (limit {MAX_PARITY_DIFF:.0e}) on {len(faces)} faces")
    return diff


def build_metadata(
    model: keras.Model, spec: CropSpec, run: dict[str, Any], name: str, version: str, opset: int, card: str | None
) -> dict[str, Any]:
    """Everything the service needs to use the model, what the card says about it, and the card's file name
    (None when there is no card)."""
    evaluation = run.get("evaluation", {})
    config = run.get("config", {})
    return {
        "schema": METADATA_SCHEMA,
        "name": name,
        "version": version,
        "architecture": model.name,
        "parameters": int(model.count_params()),
        "opset": opset,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, *spec.shape],
            "layout": "NHWC",
            "dtype": "float32",
            "colour": spec.colour,
            "size": spec.size,
            "normalisation": {"scale": spec.scale, "offset": spec.offset, "formula": "pixel * scale + offset"},
            "crop": _crop_entry(spec),
        },
        "output": {"name": OUTPUT_NAME, "kind": "softmax"},
        "class_maps": _class_maps_entry(model),
        "labels": list(LABELS),
        "temperature": float(evaluation.get("temperature", 1.0)),
        "calibration": "p = softmax(log(probabilities) / temperature)",
        "inference": {"flip_average": bool(evaluation.get("flip_average", False))},
        "detector": config.get("detector", "ssd"),
        "training": {
            "data": config.get("data"),
            "epochs": config.get("epochs"),
            "seed": config.get("seed"),
            "splits": {k: v for k, v in run.get("data", {}).items() if k in ("train", "val", "test")},
        },
        "evaluation": evaluation.get("summary", {}),
        "card": card,
    }


def _crop_entry(spec: CropSpec) -> dict[str, Any]:
    """The crop's framing; a template crop adds its kind, keypoint names and places (in crop pixels)."""
    entry: dict[str, Any] = {"margin": spec.margin, "square": spec.square, "align": spec.align, "outside": spec.outside}
    if spec.template is not None:
        entry |= {"kind": spec.kind, "keypoints": list(KEYPOINTS[: len(spec.template)])}
        entry["template"] = [list(point) for point in spec.template]
    return entry


def _class_maps_entry(model: keras.Model) -> dict[str, Any] | None:
    """How the service finds and reads the class activation maps; None for models without them."""
    if not has_class_maps(model):
        return None
    return {
        "name": CLASS_MAPS_NAME,
        "shape": [None, *model.get_layer(CLASS_MAPS_LAYER).output.shape[1:]],
        "layout": "NHWC, one channel per label",
        "kind": "logits",
        "meaning": "the mean of each map over its grid is the logit fed to the softmax of the first output",
    }


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    name: str | None = None,
    version: str | None = None,
    opset: int = 17,
    parity_faces: npt.NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """Write ``out`` (.onnx) and ``out`` with .json beside it; return the metadata."""
    model = keras.models.load_model(checkpoint, compile=False)
    run = run_dir_files(checkpoint)
    spec = crop_spec_of(run, model)
    if parity_faces is None:
        parity_faces = _validation_faces(run, spec)
    name = name or f"gender-{model.name.replace('_', '-')}"
    version = version or dt.date.today().isoformat().replace("-", ".")
    # evaluate writes the card into RUNDIR/report; without it there is none to copy, and the metadata says so.
    report_dir = checkpoint.parent / REPORT_DIR
    card = CARD_NAME if (report_dir / CARD_NAME).is_file() else None
    metadata = build_metadata(model, spec, run, name, version, opset, card)

    model_proto = convert(model, opset)
    for key, value in metadata.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    model_proto.producer_name = "facegender"
    onnx_bytes = model_proto.SerializeToString()
    diff = check_parity(model, onnx_bytes, parity_faces)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(onnx_bytes)
    metadata["sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    metadata["size_bytes"] = len(onnx_bytes)
    metadata["parity"] = {"faces": len(parity_faces), "max_abs_diff": diff}
    out.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    _copy_report(report_dir, out.parent)
    print(
        f"wrote {out} ({len(onnx_bytes) / 1024:.0f} KiB) and {out.with_suffix('.json')}; "
        f"parity on {len(parity_faces)} faces: max |diff| {diff:.1e}"
    )
    if card is None:
        print(f"no model card: run `python -m training evaluate {checkpoint}` first to write one beside the model")
    return metadata


def _copy_report(report_dir: Path, target: Path) -> None:
    """Put the model card, its plots and its explanation sheets (written by evaluate, explain) beside the model."""
    if not report_dir.is_dir() or report_dir.resolve() == target.resolve():
        return
    for name in (CARD_NAME, "model_card.json", "confusion.png", "reliability.png", "groups.png"):
        if (report_dir / name).is_file():
            shutil.copyfile(report_dir / name, target / name)
    sheets = report_dir / EXPLANATIONS_DIR
    if sheets.is_dir():
        shutil.rmtree(target / EXPLANATIONS_DIR, ignore_errors=True)
        shutil.copytree(sheets, target / EXPLANATIONS_DIR)


def _validation_faces(run: dict[str, Any], spec: CropSpec, count: int = 256) -> npt.NDArray[np.float32]:
    """Real faces from the run's validation split, cut with the serving crop."""
    from training.train import TrainConfig, load_samples, load_split_data

    config = run.get("config")
    if config is None:
        raise ParityError("no config.json beside the checkpoint, so no validation faces to check parity on")
    train_config = TrainConfig(**config)
    samples = [s for s in load_samples(train_config) if s.split == "val"]
    data, _ = load_split_data(samples, train_config, limit=count)
    return data["val"].x
