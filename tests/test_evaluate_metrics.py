"""Evaluation metrics: agree with scikit-learn, bootstraps behave, verdicts read right."""

from __future__ import annotations

import numpy as np
import pytest

from aiflywheel.metrics.classification import (
    bootstrap_ci,
    calibration,
    classification_metrics,
    confident_mistakes,
    expected_calibration_error,
    paired_bootstrap,
    roc_auc,
    slice_metrics,
    verdict,
    worst_slice,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")

LABELS = ["正面", "negative", "neutral <x>", "rare"]


def _noisy(rng: np.random.Generator, y: list[str], labels: list[str], accuracy: float) -> list[str]:
    """``y`` with about ``1 - accuracy`` of the rows replaced by a random label."""
    return [v if rng.random() < accuracy else str(rng.choice(labels)) for v in y]


def _data(n: int, seed: int = 0, accuracy: float = 0.7) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    y = [str(v) for v in rng.choice(LABELS, n, p=[0.4, 0.3, 0.25, 0.05])]
    return y, _noisy(rng, y, LABELS, accuracy)


# ----------------------------------------------------------------------------- point metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed: int) -> None:
    y, pred = _data(500, seed)
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(len(LABELS)), size=len(y))
    m = classification_metrics(y, pred, proba, LABELS)
    skm = sklearn_metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["macro_precision"] == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0)
    )
    assert m["macro_recall"] == pytest.approx(
        skm.recall_score(y, pred, average="macro", zero_division=0)
    )
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=LABELS, zero_division=0)
    for i, label in enumerate(LABELS):
        got = m["per_class"][label]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert got["support"] == s[i]
    assert m["confusion"]["labels"] == LABELS
    assert m["confusion"]["matrix"] == skm.confusion_matrix(y, pred, labels=LABELS).tolist()
    assert m["roc_auc"] is None  # not binary
    assert 0 <= m["calibration"]["ece"] <= 1
    assert len(m["calibration"]["bins"]) == 10
    assert sum(b["count"] for b in m["calibration"]["bins"]) == len(y)


def test_macro_average_skips_labels_absent_from_truth_and_predictions() -> None:
    y = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "b"]
    m = classification_metrics(y, pred, None, ["a", "b", "never"])
    assert m["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(y, pred, average="macro"))
    assert m["per_class"]["never"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["calibration"] is None
    assert m["roc_auc"] is None


def test_binary_roc_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = [str(v) for v in rng.choice(["neg", "pos"], 400)]
    score = np.round(rng.random(400) * 0.5 + 0.4 * (np.array(y) == "pos"), 1)  # many ties
    proba = np.column_stack([1 - score, score])
    pred = ["pos" if s > 0.5 else "neg" for s in score]
    m = classification_metrics(y, pred, proba, ["neg", "pos"])
    expected = sklearn_metrics.roc_auc_score([v == "pos" for v in y], score)
    assert m["roc_auc"] == pytest.approx(expected)
    assert roc_auc([True, True], [0.1, 0.9]) is None
    one_class = classification_metrics(["pos", "pos"], ["pos", "neg"], proba[:2], ["neg", "pos"])
    assert one_class["roc_auc"] is None


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="same length"):
        classification_metrics(["a"], ["a", "b"], None, ["a", "b"])
    with pytest.raises(ValueError, match=r"y_pred\[1\] is 'c'"):
        classification_metrics(["a", "b"], ["a", "c"], None, ["a", "b"])
    with pytest.raises(ValueError, match="at least one row"):
        classification_metrics([], [], None, ["a"])
    with pytest.raises(ValueError, match="unique"):
        classification_metrics(["a"], ["a"], None, ["a", "a"])
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(["a"], ["a"], np.ones((1, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="metric must be one of"):
        bootstrap_ci(["a"], ["a"], ["a"], metric="auc")
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(["a"], ["a"], ["a"], confidence=1.5)


# ----------------------------------------------------------------------------- calibration


def test_ece_is_zero_when_perfectly_calibrated() -> None:
    confidence = [0.75] * 100 + [0.95] * 100
    correct = [True] * 75 + [False] * 25 + [True] * 95 + [False] * 5
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0)
    # the same through probabilities: 75% sure of "a" and right 75% of the time
    y = ["a"] * 75 + ["b"] * 25
    m = classification_metrics(y, ["a"] * 100, np.tile([0.75, 0.25], (100, 1)), ["a", "b"])
    assert m["calibration"]["ece"] == pytest.approx(0.0)
    filled = [b for b in m["calibration"]["bins"] if b["count"]]
    assert filled == [{"lo": 0.7, "hi": 0.8, "confidence": 0.75, "accuracy": 0.75, "count": 100}]


def test_ece_is_large_when_overconfident() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.95, 1.0, 1000)
    correct = rng.random(1000) < 0.6
    ece = expected_calibration_error(confidence, correct)
    assert ece == pytest.approx(float(confidence.mean()) - float(correct.mean()), abs=0.01)
    assert ece > 0.3


def test_calibration_bins_include_both_ends_and_mark_empty_bins() -> None:
    result = calibration([0.0, 1.0, 0.1], [False, True, True])
    counts = [b["count"] for b in result["bins"]]
    assert counts == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert result["bins"][2]["confidence"] is None
    with pytest.raises(ValueError, match="within"):
        calibration([1.2], [True])


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_rows() -> None:
    widths = []
    for n in (200, 2000):
        y, pred = _data(n)
        point = classification_metrics(y, pred, None, LABELS)["macro_f1"]
        lo, hi = bootstrap_ci(y, pred, LABELS, n_resamples=500)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_bootstrap_ci_is_deterministic_for_a_seed_and_covers_accuracy() -> None:
    y, pred = _data(300)
    assert bootstrap_ci(y, pred, LABELS, seed=7) == bootstrap_ci(y, pred, LABELS, seed=7)
    lo, hi = bootstrap_ci(y, pred, LABELS, metric="accuracy")
    assert lo < sklearn_metrics.accuracy_score(y, pred) < hi


def test_paired_bootstrap_finds_a_clearly_better_model() -> None:
    rng = np.random.default_rng(5)
    y, _ = _data(1000)
    good = _noisy(rng, y, LABELS, 0.9)
    bad = _noisy(rng, y, LABELS, 0.6)
    result = paired_bootstrap(y, good, bad, LABELS)
    point = (
        classification_metrics(y, good, None, LABELS)["macro_f1"]
        - classification_metrics(y, bad, None, LABELS)["macro_f1"]
    )
    assert result["diff"] == pytest.approx(point)
    assert result["ci"][0] > 0
    assert result["p_value"] < 0.01
    reverse = paired_bootstrap(y, bad, good, LABELS)
    assert reverse["ci"][1] < 0
    assert reverse["p_value"] > 0.99


def test_paired_bootstrap_of_identical_predictions_is_a_coin_flip() -> None:
    y, pred = _data(300)
    result = paired_bootstrap(y, pred, pred, LABELS)
    assert result["diff"] == 0
    assert result["ci"] == [0.0, 0.0]
    assert result["p_value"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- slices, mistakes


def test_slice_metrics_report_gap_and_skip_small_slices() -> None:
    rng = np.random.default_rng(2)
    y = [str(v) for v in rng.choice(["a", "b"], 300)]
    channel = ["email"] * 100 + ["chat"] * 190 + ["fax"] * 6 + [None] * 4
    pred = list(y)
    for i in range(0, 100, 4):  # every 4th email is wrong
        pred[i] = "b" if y[i] == "a" else "a"
    result = slice_metrics(y, pred, {"channel": channel}, ["a", "b"], min_support=20)
    ch = result["channel"]
    assert list(ch["values"]) == ["chat", "email"]  # largest first
    assert ch["values"]["chat"] == {"n": 190, "accuracy": 1.0, "macro_f1": 1.0}
    assert ch["values"]["email"]["accuracy"] == pytest.approx(0.75)
    assert ch["small_slices"] == 2
    assert ch["small_rows"] == 10
    assert ch["best"] == {"value": "chat", "macro_f1": 1.0}
    assert ch["worst"]["value"] == "email"
    assert ch["gap"] == pytest.approx(1.0 - ch["values"]["email"]["macro_f1"])
    assert worst_slice(result) == {
        "column": "channel",
        "value": "email",
        "macro_f1": ch["worst"]["macro_f1"],
    }
    nothing = slice_metrics(y, pred, {"channel": channel}, ["a", "b"], min_support=1000)
    assert nothing["channel"]["best"] is None
    assert nothing["channel"]["gap"] is None
    assert worst_slice(nothing) is None
    with pytest.raises(ValueError, match="3 values for 300 rows"):
        slice_metrics(y, pred, {"channel": ["x"] * 3}, ["a", "b"])


def test_confident_mistakes_are_sorted_by_confidence() -> None:
    texts = ["t0", "t1", "t2", "t3", "t4"]
    y = ["a", "a", "b", "b", "a"]
    pred = ["b", "a", "a", "a", "b"]
    proba = np.array([[0.4, 0.6], [0.9, 0.1], [0.95, 0.05], [0.6, 0.4], [0.1, 0.9]])
    found = confident_mistakes(texts, y, pred, proba, ["a", "b"], k=3)
    assert [m["text"] for m in found] == ["t2", "t4", "t0"]
    assert found[0] == {"text": "t2", "label": "b", "predicted": "a", "confidence": 0.95}
    unsorted = confident_mistakes(texts, y, pred, None, ["a", "b"], k=10)
    assert [m["text"] for m in unsorted] == ["t0", "t2", "t3", "t4"]
    assert all(m["confidence"] is None for m in unsorted)


# ----------------------------------------------------------------------------- verdict


def test_verdict_when_the_model_beats_the_baseline() -> None:
    text = verdict(
        0.912,
        0.871,
        {"diff": 0.041, "ci": [0.028, 0.053], "p_value": 0.0},
        {"column": "channel", "value": "email", "macro_f1": 0.812},
        model_name="e5-small/head",
        baseline_name="TF-IDF",
    )
    assert text == (
        "e5-small/head beats the TF-IDF baseline by +4.1 macro-F1 points (95% CI 2.8–5.3); "
        "worst slice: channel=email 0.81."
    )


def test_verdict_when_the_difference_is_within_the_noise() -> None:
    text = verdict(
        0.877,
        0.871,
        {"diff": 0.006, "ci": [-0.009, 0.021], "p_value": 0.2},
        None,
        model_name="m",
        baseline_name="TF-IDF",
    )
    assert text == (
        "m is not measurably better than the TF-IDF baseline (+0.6 points, 95% CI −0.9 to 2.1)."
    )


def test_verdict_when_the_model_is_worse() -> None:
    text = verdict(
        0.848,
        0.871,
        {"diff": -0.023, "ci": [-0.031, -0.015], "p_value": 1.0},
        None,
        model_name="m",
        baseline_name="TF-IDF",
    )
    assert text == (
        "m is worse than the TF-IDF baseline by 2.3 macro-F1 points (95% CI 1.5–3.1): "
        "keep the baseline."
    )


def test_verdict_without_an_interval_says_it_was_not_tested() -> None:
    text = verdict(0.9, 0.8, None, None, model_name="m", baseline_name="b")
    assert "+10.0" in text
    assert "not tested" in text
