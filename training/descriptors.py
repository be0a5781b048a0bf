"""A frozen backbone's descriptors of every face, computed once and cached, so a head trains in minutes.

Each face is cut with the serving crop (``service.preprocess.crop_face``), as is its mirror image, and both
go through the backbone exported to ONNX: the same graph the served model runs, at onnxruntime's speed.
The cache is written in chunks, so a cut-off run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.preprocess import CropSpec, crop_face, to_model_input
from training.datasets import Sample
from training.prepare import FaceRecord, read_image, spec_key

CHUNK = 2048
BATCH = 32


@dataclass
class Descriptors:
    """The faces with a detection, in order, with the descriptors of their crop and of its mirror image."""

    samples: list[Sample]
    plain: npt.NDArray[np.float32]
    mirrored: npt.NDArray[np.float32]

    @property
    def y(self) -> npt.NDArray[np.int64]:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def subset(self, index: npt.NDArray[np.int64]) -> Descriptors:
        return Descriptors([self.samples[i] for i in index], self.plain[index], self.mirrored[index])


def export_backbone(backbone: keras.Model, path: Path) -> Path:
    """The backbone as ONNX at ``path`` (written once; the file name should carry its weights' identity)."""
    if not path.is_file():
        from training.export import convert

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(convert(backbone).SerializeToString())
        os.replace(partial, path)
    return path


def backbone_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def describe(session: ort.InferenceSession, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The backbone's output for a batch of model inputs."""
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: batch})[0], np.float32)


def compute_descriptors(
    samples: list[Sample], records: dict[str, FaceRecord], spec: CropSpec, backbone_onnx: Path, cache_dir: Path
) -> Descriptors:
    """The descriptors of every sample with a detected face, from the cache where they are there already."""
    usable = [s for s in samples if (r := records.get(str(s.path))) is not None and r.box is not None]
    weights = hashlib.sha256(backbone_onnx.read_bytes()).hexdigest()[:12]
    folder = cache_dir / "descriptors" / f"{spec_key(spec, usable)}-{weights}"
    folder.mkdir(parents=True, exist_ok=True)
    session = None
    parts = []
    started, done = time.monotonic(), 0
    for number, start in enumerate(range(0, len(usable), CHUNK)):
        path = folder / f"{number:05d}.npy"
        chunk = usable[start : start + CHUNK]
        if not path.is_file():
            session = session or backbone_session(backbone_onnx)
            out = np.empty((2, len(chunk), session.get_outputs()[0].shape[-1]), np.float32)
            for i in range(0, len(chunk), BATCH):
                crops = np.stack([_crop(s, records[str(s.path)], spec) for s in chunk[i : i + BATCH]])
                x = to_model_input(crops, spec)
                both = describe(session, np.concatenate([x, x[:, :, ::-1]]))
                out[0, i : i + len(crops)], out[1, i : i + len(crops)] = both[: len(crops)], both[len(crops) :]
            np.save(path.with_name(path.stem + ".partial.npy"), out)
            os.replace(path.with_name(path.stem + ".partial.npy"), path)
            done += len(chunk)
            rate = done / (time.monotonic() - started)
            print(f"  descriptors: {start + len(chunk)}/{len(usable)} faces ({rate:.0f} faces/s)", flush=True)
        parts.append(np.load(path))
    if not parts:
        return Descriptors([], np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
    joined = np.concatenate(parts, axis=1)
    return Descriptors(usable, joined[0], joined[1])


def _crop(sample: Sample, record: FaceRecord, spec: CropSpec) -> npt.NDArray[np.uint8]:
    image = read_image(sample.path)
    if image is None or record.box is None:
        raise ValueError(f"{sample.path}: unreadable, though a face was found in it before")
    return crop_face(image, record.box, spec, record.points)
