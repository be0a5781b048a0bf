"""Shared fixtures: paths to the test photos and to ../shared when it exists."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def read_fixture(name: str) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(FIXTURES / name))
    assert image is not None, f"cannot read fixture {name}"
    return np.asarray(image, dtype=np.uint8)


def photo_variants(image: npt.NDArray[np.uint8], count: int) -> list[npt.NDArray[np.uint8]]:
    """``count`` different photos of one scene: shifted and brightened a little, every other one mirrored."""
    out = []
    for i in range(count):
        shifted = np.roll(image, 6 * i, axis=1)
        out.append(np.clip(shifted.astype(int) + 8 * i, 0, 255).astype(np.uint8)[:, :: (-1) ** i])
    return out


def write_labelled_variants(folder: Path, gender: str, image: npt.NDArray[np.uint8], splits: list[str]) -> list[str]:
    """One variant of ``image`` per split, written as ``GENDER-I.jpg``; their labels.csv rows (path,gender,split)."""
    rows = []
    for i, (photo, split) in enumerate(zip(photo_variants(image, len(splits)), splits, strict=True)):
        cv2.imwrite(str(folder / f"{gender}-{i}.jpg"), photo)
        rows.append(f"{gender}-{i}.jpg,{gender},{split}")
    return rows


@pytest.fixture
def astronaut() -> npt.NDArray[np.uint8]:
    """A public-domain NASA portrait with exactly one face (BGR)."""
    return read_fixture("astronaut.jpg")


@pytest.fixture
def coffee() -> npt.NDArray[np.uint8]:
    """A photo with no face (BGR)."""
    return read_fixture("coffee.jpg")


@pytest.fixture
def shared_datasets() -> Path:
    if not any(SHARED_DATASETS.glob("*.tar.gz")):
        pytest.skip(f"needs the shared face datasets in {SHARED_DATASETS} (present in CI, absent on a fresh clone)")
    return SHARED_DATASETS
