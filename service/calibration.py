"""Temperature scaling of a softmax output; training fits the temperature, serving applies it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def apply_temperature(probs: npt.NDArray[np.floating], temperature: float) -> npt.NDArray[np.float64]:
    """Return softmax(log(p) / T) row by row; T > 1 softens over-confident probabilities."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)
