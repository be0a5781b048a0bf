"""Service fixtures: the real bundled model (or FACEGENDER_MODEL), real photos, a real app."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.config import Settings
from tests.conftest import read_fixture


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def jpeg(bgr: np.ndarray, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).save(buffer, "JPEG", quality=92, **save_kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    return jpeg(read_fixture("astronaut.jpg"))


@pytest.fixture(scope="session")
def coffee_jpeg() -> bytes:
    return jpeg(read_fixture("coffee.jpg"))


@pytest.fixture(scope="session")
def two_faces_jpeg() -> bytes:
    """Our own composite: the astronaut's head at full and at half size on a grey canvas."""
    face = read_fixture("astronaut.jpg")[30:210, 130:320]
    small = face[::2, ::2]
    canvas = np.full((300, 600, 3), 90, np.uint8)
    canvas[40 : 40 + face.shape[0], 20 : 20 + face.shape[1]] = face
    canvas[60 : 60 + small.shape[0], 400 : 400 + small.shape[1]] = small
    return jpeg(canvas)
