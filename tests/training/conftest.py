"""Training tests need the `train` extra (TensorFlow, tf2onnx); skip them cleanly without it."""

import importlib.util

import pytest


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("tf2onnx"):
        return
    skip = pytest.mark.skip(reason="needs the train extra: pip install -e '.[train]'")
    for item in items:
        if "train" in item.keywords:
            item.add_marker(skip)
