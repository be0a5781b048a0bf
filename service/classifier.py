"""The ONNX gender model: load it with its metadata, check both, classify batches of faces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.calibration import apply_temperature
from service.errors import ModelLoadError
from service.preprocess import CropSpec


class GenderClassifier:
    """An onnxruntime session plus the metadata contract written by ``training.export``."""

    def __init__(self, model_path: Path, threads: int = 1, flip_average: bool | None = None) -> None:
        """``flip_average`` None: as the metadata's ``inference.flip_average`` says, off when it says nothing."""
        self.path = model_path
        self.metadata, model_bytes = load_model_files(model_path)
        try:
            self.spec = CropSpec.from_dict(
                {**self.metadata["input"], **self.metadata["input"]["crop"], **self.metadata["input"]["normalisation"]}
            )
            self.labels: list[str] = list(self.metadata["labels"])
            self.temperature = float(self.metadata.get("temperature", 1.0))
            self.input_name: str = self.metadata["input"]["name"]
            self.output_name: str = self.metadata["output"]["name"]
            maps = self.metadata.get("class_maps")
            self.class_maps_name: str | None = maps["name"] if maps else None
            self.class_maps_shape: tuple[int, ...] = tuple(maps["shape"][1:]) if maps else ()
            declared = (self.metadata.get("inference") or {}).get("flip_average", False)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{model_path.with_suffix('.json')}: incomplete model metadata ({exc})") from None
        if not isinstance(declared, bool):
            raise ModelLoadError(f"{model_path.with_suffix('.json')}: inference.flip_average must be true or false")
        self.flip_average = declared if flip_average is None else flip_average
        if sorted(self.labels) != ["female", "male"]:
            raise ModelLoadError(f"{model_path}: labels must be female and male, got {self.labels}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for broken graphs
            raise ModelLoadError(f"{model_path}: onnxruntime cannot load the model ({exc})") from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if self.input_name not in inputs or list(inputs[self.input_name][1:]) != list(self.spec.shape):
            raise ModelLoadError(f"{model_path}: graph inputs {inputs} do not match the metadata {self.spec.shape}")
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if self.class_maps_name is not None and (
            self.class_maps_name not in outputs or list(outputs[self.class_maps_name][1:]) != [*self.class_maps_shape]
        ):
            raise ModelLoadError(f"{model_path}: graph outputs {outputs} lack the class maps the metadata declares")

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def sha256(self) -> str:
        return str(self.metadata["sha256"])

    def classify(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Calibrated probabilities (N, 2) in ``self.labels`` order for a batch of model inputs."""
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        (raw,) = self._run(batch, [self.output_name])
        return apply_temperature(raw, self.temperature)

    def classify_with_maps(
        self, batch: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        """Calibrated probabilities and the pre-pooling class maps (N, rows, columns, labels) of a batch."""
        if self.class_maps_name is None:
            raise ValueError(f"{self.path} has no class activation maps")
        if len(batch) == 0:
            return self.classify(batch), np.zeros((0, *self.class_maps_shape), dtype=np.float32)
        raw, maps = self._run(batch, [self.output_name, self.class_maps_name])
        return apply_temperature(raw, self.temperature), maps.astype(np.float32)

    def _run(self, batch: npt.NDArray[np.float32], outputs: list[str]) -> list[npt.NDArray[Any]]:
        """The raw probabilities (``outputs[0]``) and maps; with flip averaging, the mean over the faces and their
        mirror images, run as one batch, each mirrored map mirrored back to stay aligned with the face as sent."""
        if not self.flip_average:
            return [np.asarray(o) for o in self.session.run(outputs, {self.input_name: batch})]
        n = len(batch)
        both = self.session.run(outputs, {self.input_name: np.concatenate([batch, batch[:, :, ::-1]])})
        probs, *maps = (np.asarray(o) for o in both)
        mean = (probs[:n].astype(np.float64) + probs[n:]) / 2
        return [mean, *((m[:n] + m[n:, :, ::-1]) / 2 for m in maps)]


def load_model_files(model_path: Path) -> tuple[dict[str, Any], bytes]:
    """Read the ONNX file and the metadata JSON beside it; refuse a pair whose sha256 disagrees."""
    json_path = model_path.with_suffix(".json")
    for path in (model_path, json_path):
        if not path.is_file():
            raise ModelLoadError(
                f"model file not found: {path}; set FACEGENDER_MODEL to an ONNX model with its .json metadata beside it"
            )
    try:
        metadata = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{json_path}: cannot read the model metadata ({exc})") from None
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{json_path}: the model metadata must be a JSON object")
    model_bytes = model_path.read_bytes()
    digest = hashlib.sha256(model_bytes).hexdigest()
    if metadata.get("sha256") != digest:
        raise ModelLoadError(
            f"{model_path}: sha256 {digest[:12]}... does not match its metadata "
            f"({str(metadata.get('sha256'))[:12]}...); the file is truncated, replaced or not the one described"
        )
    return metadata, model_bytes
