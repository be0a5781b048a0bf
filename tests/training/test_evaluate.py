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


def test_flip_averaging_is_kept_only_when_it_lowers_validation_log_loss():
    """A model that reads one half of the face is helped by its mirror image; a symmetric one is not."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(400, 8, 8, 1)).astype(np.float32)
    y = (x[:, :, :4].mean(axis=(1, 2, 3)) + x[:, :, 4:].mean(axis=(1, 2, 3)) > 1.0).astype(np.int64)

    def one_sided(batch):
        male = 1 / (1 + np.exp(-40 * (2 * batch[:, :, :4].mean(axis=(1, 2, 3)) - 1.0)))
        return np.stack([1 - male, male], axis=1).astype(np.float32)

    def symmetric(batch):
        male = 1 / (1 + np.exp(-40 * (batch.mean(axis=(1, 2, 3)) - 0.5)))
        return np.stack([1 - male, male], axis=1).astype(np.float32)

    helped = evaluate.choose_flip(one_sided, x, y)
    assert helped["flip_average"] is True
    assert helped["options"]["flip_averaged"]["val_log_loss"] < helped["options"]["plain"]["val_log_loss"]
    same = evaluate.choose_flip(symmetric, x, y)
    assert same["flip_average"] is False  # equal losses: no reason to pay for a second pass
    np.testing.assert_allclose(evaluate.flip_averaged(symmetric, x), symmetric(x), atol=1e-6)


def _figures(balanced, found=None):
    return {
        "n": 10, "accuracy": balanced, "balanced_accuracy": balanced, "recall": {"female": balanced, "male": balanced},
        "roc_auc": None, "ece_before": 0.1, "ece_after": 0.02, **({"detection_rate": found} if found else {}),
    }  # fmt: skip


def test_the_cross_source_table_puts_external_sets_first_and_names_what_each_row_is():
    summary = {
        "sets": {
            "celeba_gender_test": _figures(0.97),
            "pixabay_portraits_end_to_end": _figures(0.93, 0.99),
            "celeba_wild_end_to_end": _figures(0.94, 0.998),
        },
        "leave_out": [
            {"run": "no-celeba", "trained_on": ["utkface64"], "sets": {"celeba_wild_end_to_end": _figures(0.9)}}
        ],
    }
    rows = evaluate._cross_source_rows(summary)
    assert [r.split("|")[1].strip() for r in rows] == ["celeba_wild", "pixabay_portraits", "celeba_gender"]
    wild, pixabay, celeba = rows
    assert "external, context" in wild and "99.8%" in wild and "| 90.0% |" in wild
    assert "never in training" in pixabay
    assert "in-domain test split, tight crops" in celeba and "not evaluated" in celeba


def test_margin_sensitivity_reports_the_spread_over_the_asked_range():
    curve = {m: {"balanced_accuracy": v} for m, v in (("0.1", 0.90), ("0.2", 0.95), ("0.25", 0.96), ("0.4", 0.93))}
    lines = evaluate._margin_lines({"margins": {"celeba_wild": curve, "tight": {"0.25": curve["0.25"]}}},
                                   evaluate.TrainConfig())  # fmt: skip
    (row,) = [line for line in lines if line.startswith("| celeba_wild")]
    assert "90.0% | 95.0% | 96.0% | 93.0%" in row and "6.0 points" in row
    assert not any(line.startswith("| tight") for line in lines)  # one margin is no curve
