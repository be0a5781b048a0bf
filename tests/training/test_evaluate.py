import numpy as np
import pytest

pytestmark = pytest.mark.train

evaluate = pytest.importorskip("training.evaluate", reason="needs the train extra")


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_fit_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(20_000, 2))
    y = np.array([rng.choice(2, p=p) for p in _softmax(logits)])
    overconfident = _softmax(logits * 2.5).astype(np.float32)
    t = evaluate.fit_temperature(overconfident, y)
    assert t == pytest.approx(2.5, rel=0.08)
    calibrated = evaluate.apply_temperature(overconfident, t)
    assert evaluate.expected_calibration_error(calibrated, y) < evaluate.expected_calibration_error(
        overconfident.astype(np.float64), y
    )


def test_apply_temperature_one_is_the_identity_and_rows_sum_to_one():
    probs = np.array([[0.9, 0.1], [0.3, 0.7]], dtype=np.float32)
    np.testing.assert_allclose(evaluate.apply_temperature(probs, 1.0), probs, rtol=1e-6)
    np.testing.assert_allclose(evaluate.apply_temperature(probs, 3.0).sum(axis=1), 1.0)


def test_ece_is_zero_when_confidence_equals_accuracy_and_large_when_not():
    y = np.array([0] * 8 + [1] * 2)
    probs = np.tile([0.8, 0.2], (10, 1))
    assert evaluate.expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-9)
    assert evaluate.expected_calibration_error(np.tile([0.99, 0.01], (10, 1)), y) == pytest.approx(0.19)


def test_classification_figures_balance_the_classes():
    y = np.array([0] * 90 + [1] * 10)
    probs = np.tile([1.0, 0.0], (100, 1))  # always says female
    figures = evaluate.classification_figures(probs, y)
    assert figures["accuracy"] == pytest.approx(0.9)
    assert figures["balanced_accuracy"] == pytest.approx(0.5)
    assert figures["recall"] == {"female": 1.0, "male": 0.0}
