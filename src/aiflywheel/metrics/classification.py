"""Evaluation metrics for text classification: pure functions over labels and probabilities.

Nothing here knows about models. Every function takes the true labels, the predicted
labels (and, where it matters, the predicted probabilities with one column per label, in
``labels`` order) and returns plain Python numbers, lists and dicts that can be written to
``metrics.json`` as they are.

- :func:`classification_metrics`: accuracy, macro/micro F1, per-class precision/recall/F1,
  the confusion matrix, ROC-AUC (binary) and calibration (ECE and reliability bins).
- :func:`bootstrap_ci`: a percentile bootstrap confidence interval for one metric.
- :func:`paired_bootstrap`: is model A better than model B on the same rows?
- :func:`slice_metrics`: accuracy and macro-F1 per metadata value (e.g. per channel).
- :func:`confident_mistakes`: the wrong predictions the model was surest about.
- :func:`verdict`: one sentence for a product manager.

Macro averages are taken over the labels that occur in the true *or* the predicted labels
(scikit-learn's default), so a label that is absent from the test set and never predicted
does not count as an F1 of 0. The bootstrap applies the same rule inside each resample, so
a rare label missing from a resample does not drag its score down. Precision, recall and F1
of a label with nothing to divide by are 0, as with scikit-learn's ``zero_division=0``.

Bootstraps are vectorized: each resample is reduced to per-label counts (true, predicted,
correct) with one ``numpy.bincount``, so 1,000 resamples of a few thousand rows take a few
milliseconds. Every random draw comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BOOTSTRAP_METRICS",
    "bootstrap_ci",
    "calibration",
    "classification_metrics",
    "confident_mistakes",
    "expected_calibration_error",
    "paired_bootstrap",
    "roc_auc",
    "slice_metrics",
    "verdict",
    "worst_slice",
]

#: Metrics :func:`bootstrap_ci` can resample.
BOOTSTRAP_METRICS = ("accuracy", "macro_f1", "micro_f1", "macro_precision", "macro_recall")
#: Equal-width confidence bins of the reliability diagram and the ECE.
CALIBRATION_BINS = 10
#: Rows × resamples handled per bootstrap chunk, to bound memory on large test sets.
_CHUNK_CELLS = 4_000_000


# ----------------------------------------------------------------------------- inputs


def _encode(values: Sequence[str], labels: Sequence[str], what: str) -> np.ndarray:
    """``values`` as indices into ``labels``; an unknown value raises ``ValueError``."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        try:
            out[i] = index[value]
        except KeyError:
            shown = ", ".join(repr(x) for x in list(labels)[:10])
            more = ", …" if len(labels) > 10 else ""
            raise ValueError(
                f"{what}[{i}] is {value!r}, which is not one of the labels ({shown}{more})"
            ) from None
    return out


def _check_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` as a list; empty or repeated labels raise ``ValueError``."""
    out = list(labels)
    if not out:
        raise ValueError("labels must name at least one label, got none")
    if len(set(out)) != len(out):
        repeated = sorted({str(x) for x in out if out.count(x) > 1})
        raise ValueError(f"labels must be unique, got repeats: {', '.join(repeated)}")
    return out


def _encode_pair(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted labels as index arrays of the same, non-zero length."""
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}"
        )
    if len(y_true) == 0:
        raise ValueError("metrics need at least one row, got 0")
    return _encode(y_true, labels, "y_true"), _encode(y_pred, labels, "y_pred")


def _check_proba(
    proba: np.ndarray | Sequence[Sequence[float]], n_rows: int, n_labels: int
) -> np.ndarray:
    """``proba`` as a float array of shape (rows, labels) with finite values."""
    array = np.asarray(proba, dtype=np.float64)
    if array.shape != (n_rows, n_labels):
        raise ValueError(
            f"proba must have shape (rows, labels) = ({n_rows}, {n_labels}), got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("proba must hold finite numbers, got NaN or infinity")
    return array


# ----------------------------------------------------------------------------- point metrics


def _scores_from_counts(
    tp: np.ndarray, true_n: np.ndarray, pred_n: np.ndarray
) -> dict[str, np.ndarray]:
    """Accuracy and macro/micro scores from per-label counts.

    The arrays have the label on the last axis; any leading axes (e.g. resamples) are
    kept, so one call scores every bootstrap resample at once.
    """
    tp = tp.astype(np.float64)
    true_n = true_n.astype(np.float64)
    pred_n = pred_n.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_n > 0, tp / pred_n, 0.0)
        recall = np.where(true_n > 0, tp / true_n, 0.0)
        f1 = np.where(true_n + pred_n > 0, 2 * tp / (true_n + pred_n), 0.0)
    present = (true_n + pred_n) > 0
    n_present = np.maximum(present.sum(axis=-1), 1)
    rows = np.maximum(true_n.sum(axis=-1), 1)
    accuracy = tp.sum(axis=-1) / rows
    return {
        "accuracy": accuracy,
        "micro_f1": accuracy,  # single-label: every mistake is one FP and one FN
        "macro_precision": (precision * present).sum(axis=-1) / n_present,
        "macro_recall": (recall * present).sum(axis=-1) / n_present,
        "macro_f1": (f1 * present).sum(axis=-1) / n_present,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _counts(t: np.ndarray, p: np.ndarray, n_labels: int) -> tuple[np.ndarray, ...]:
    """Per-label true positives, true counts and predicted counts."""
    tp = np.bincount(t[t == p], minlength=n_labels)
    return tp, np.bincount(t, minlength=n_labels), np.bincount(p, minlength=n_labels)


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    proba: np.ndarray | None,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, F1 scores, the confusion matrix, ROC-AUC and calibration of predictions.

    ``proba`` has one row per example and one column per label in ``labels`` order, or
    is ``None`` when the model gives no probabilities (then ``roc_auc`` and
    ``calibration`` are ``None``). Returns a dict with ``accuracy``, ``macro_precision``,
    ``macro_recall``, ``macro_f1``, ``micro_f1``, ``per_class`` (label → precision,
    recall, f1, support), ``confusion`` (``labels`` and ``matrix``, rows are true labels,
    columns predictions), ``roc_auc`` (binary tasks only: the probability of
    ``labels[1]`` as the score; ``None`` with more labels or when a class is absent) and
    ``calibration`` (see :func:`calibration`).

    Raises:
        ValueError: lengths differ, there are no rows, a label is not in ``labels``, or
            ``proba`` has the wrong shape or non-finite values.
    """
    labels = _check_labels(labels)
    t, p = _encode_pair(y_true, y_pred, labels)
    n_labels = len(labels)
    tp, true_n, pred_n = _counts(t, p, n_labels)
    scores = _scores_from_counts(tp, true_n, pred_n)
    matrix = np.bincount(t * n_labels + p, minlength=n_labels * n_labels).reshape(
        n_labels, n_labels
    )
    per_class = {
        label: {
            "precision": float(scores["precision"][i]),
            "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]),
            "support": int(true_n[i]),
        }
        for i, label in enumerate(labels)
    }
    auc: float | None = None
    calib: dict[str, Any] | None = None
    if proba is not None:
        probs = _check_proba(proba, len(t), n_labels)
        if n_labels == 2:
            auc = roc_auc(t == 1, probs[:, 1])
        top = probs.argmax(axis=1)
        calib = calibration(probs[np.arange(len(t)), top], top == t)
    return {
        "accuracy": float(scores["accuracy"]),
        "macro_precision": float(scores["macro_precision"]),
        "macro_recall": float(scores["macro_recall"]),
        "macro_f1": float(scores["macro_f1"]),
        "micro_f1": float(scores["micro_f1"]),
        "per_class": per_class,
        "confusion": {"labels": list(labels), "matrix": matrix.tolist()},
        "roc_auc": auc,
        "calibration": calib,
    }


def roc_auc(
    positive: Sequence[bool] | np.ndarray, score: Sequence[float] | np.ndarray
) -> float | None:
    """The area under the ROC curve of ``score`` for the rows where ``positive`` is true.

    Computed as the Mann–Whitney statistic with tied scores sharing their average rank,
    which equals the trapezoidal ROC area. ``None`` when all rows are of one class.
    """
    is_pos = np.asarray(positive, dtype=bool)
    values = np.asarray(score, dtype=np.float64)
    n_pos = int(is_pos.sum())
    n_neg = len(is_pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # average rank (1-based) of each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    rank_sum = float(ranks[is_pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# ----------------------------------------------------------------------------- calibration


def calibration(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    n_bins: int = CALIBRATION_BINS,
) -> dict[str, Any]:
    """The expected calibration error and the reliability bins behind it.

    ``confidence`` is the probability the model gave its top label for each row and
    ``correct`` whether that label was right. Rows fall into ``n_bins`` equal-width bins
    over [0, 1] (``lo <= confidence < hi``; the last bin includes 1). Each bin reports its
    ``lo``, ``hi``, mean ``confidence``, ``accuracy`` and ``count``; the first two are
    ``None`` for an empty bin. ``ece`` is the row-weighted mean of
    ``|accuracy - confidence|`` over the bins: 0 for a perfectly calibrated model.

    Raises:
        ValueError: lengths differ, there are no rows, ``n_bins`` < 1 or a confidence is
            outside [0, 1].
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(
            f"confidence and correct must be 1-D of the same length, got {conf.shape} and "
            f"{hit.shape}"
        )
    if len(conf) == 0:
        raise ValueError("calibration needs at least one row, got 0")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not np.all((conf >= 0) & (conf <= 1)):
        raise ValueError("confidence must be within [0, 1], got values outside it or NaN")
    which = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(which, weights=hit.astype(np.float64), minlength=n_bins)
    # sum over bins of count/n * |accuracy - confidence| = |hits - confidence sum| / n
    ece = float(np.abs(hit_sum - conf_sum).sum() / len(conf))
    bins = []
    for b in range(n_bins):
        count = int(counts[b])
        mean_conf = float(conf_sum[b] / count) if count else None
        accuracy = float(hit_sum[b] / count) if count else None
        bins.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "confidence": mean_conf,
                "accuracy": accuracy,
                "count": count,
            }
        )
    return {"ece": ece, "bins": bins}


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    n_bins: int = CALIBRATION_BINS,
) -> float:
    """The expected calibration error of top-label ``confidence`` (see :func:`calibration`)."""
    return float(calibration(confidence, correct, n_bins=n_bins)["ece"])


# ----------------------------------------------------------------------------- bootstrap


def _resampled_counts(
    t: np.ndarray,
    preds: Sequence[np.ndarray],
    n_labels: int,
    n_resamples: int,
    seed: int,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Per-resample label counts: true counts, and (correct, predicted) counts per model.

    Every model is scored on the same resampled rows. Arrays have shape
    (resamples, labels).
    """
    rng = np.random.default_rng(seed)
    n = len(t)
    true_n = np.empty((n_resamples, n_labels), dtype=np.int64)
    per_model = [
        (np.empty((n_resamples, n_labels), dtype=np.int64), np.empty_like(true_n)) for _ in preds
    ]
    correct = [(p == t) for p in preds]
    for start, stop in _chunks(n_resamples, max(1, _CHUNK_CELLS // n)):
        size = stop - start
        rows = rng.integers(0, n, size=(size, n))
        offset = (np.arange(size) * n_labels)[:, None]
        cells = size * n_labels
        t_codes = (offset + t[rows]).ravel()
        true_n[start:stop] = np.bincount(t_codes, minlength=cells).reshape(size, n_labels)
        for (tp, pred_n), p, ok in zip(per_model, preds, correct, strict=True):
            weights = ok[rows].ravel().astype(np.float64)
            tp[start:stop] = np.bincount(t_codes, weights=weights, minlength=cells).reshape(
                size, n_labels
            )
            p_codes = (offset + p[rows]).ravel()
            pred_n[start:stop] = np.bincount(p_codes, minlength=cells).reshape(size, n_labels)
    return true_n, per_model


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in steps of ``size``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    """Reject a resample count below 1 or a confidence outside (0, 1)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central percentile interval of ``values`` holding ``confidence`` of them."""
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    *,
    metric: str = "macro_f1",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap confidence interval ``(lo, hi)`` for ``metric``.

    Rows are resampled with replacement ``n_resamples`` times; the interval holds the
    central ``confidence`` share of the resampled scores. ``metric`` is one of
    :data:`BOOTSTRAP_METRICS`.

    Raises:
        ValueError: an unknown metric, ``n_resamples`` < 1, ``confidence`` outside
            (0, 1), or bad labels (see :func:`classification_metrics`).
    """
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"metric must be one of {', '.join(BOOTSTRAP_METRICS)}, got {metric!r}")
    _check_bootstrap(n_resamples, confidence)
    labels = _check_labels(labels)
    t, p = _encode_pair(y_true, y_pred, labels)
    true_n, [(tp, pred_n)] = _resampled_counts(t, [p], len(labels), n_resamples, seed)
    values = _scores_from_counts(tp, true_n, pred_n)[metric]
    return _interval(values, confidence)


def paired_bootstrap(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """How much better model A's macro-F1 is than model B's on the same rows.

    Both models are scored on the same resampled rows, so the noise they share (hard
    rows, easy rows) cancels out. Returns ``diff`` (macro-F1 of A minus B on all rows),
    ``ci`` (``[lo, hi]``, the percentile interval of the resampled differences),
    ``p_value`` (one-sided, for "A is not better": the share of resamples where the
    difference is ≤ 0, ties with exactly 0 counted half, so identical predictions give
    0.5 rather than 1), ``n_resamples`` and ``confidence``.

    Raises:
        ValueError: as :func:`bootstrap_ci`, or ``pred_b`` has another length.
    """
    _check_bootstrap(n_resamples, confidence)
    labels = _check_labels(labels)
    if not len(y_true) == len(pred_a) == len(pred_b):
        raise ValueError(
            f"y_true, pred_a and pred_b must have the same length, got {len(y_true)}, "
            f"{len(pred_a)} and {len(pred_b)}"
        )
    t, a = _encode_pair(y_true, pred_a, labels)
    b = _encode(pred_b, labels, "pred_b")
    n_labels = len(labels)
    point_a = _scores_from_counts(*_counts(t, a, n_labels))["macro_f1"]
    point_b = _scores_from_counts(*_counts(t, b, n_labels))["macro_f1"]
    true_n, [(tp_a, pred_a_n), (tp_b, pred_b_n)] = _resampled_counts(
        t, [a, b], n_labels, n_resamples, seed
    )
    diffs = (
        _scores_from_counts(tp_a, true_n, pred_a_n)["macro_f1"]
        - _scores_from_counts(tp_b, true_n, pred_b_n)["macro_f1"]
    )
    diffs = np.where(np.abs(diffs) < 1e-12, 0.0, diffs)  # float noise is not a difference
    lo, hi = _interval(diffs, confidence)
    p_value = (np.count_nonzero(diffs < 0) + 0.5 * np.count_nonzero(diffs == 0)) / n_resamples
    return {
        "diff": float(point_a - point_b),
        "ci": [lo, hi],
        "p_value": float(p_value),
        "n_resamples": n_resamples,
        "confidence": confidence,
    }


# ----------------------------------------------------------------------------- slices


def slice_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    slices: Mapping[str, Sequence[object]],
    labels: Sequence[str],
    *,
    min_support: int = 20,
) -> dict[str, Any]:
    """Accuracy and macro-F1 per value of each metadata column, and the gap between them.

    ``slices`` maps a column name (e.g. ``"channel"``) to one value per row; a missing
    value (``None`` or ``""``) is its own slice, ``"(missing)"``. For each column the
    result holds ``values`` (value → ``n``, ``accuracy``, ``macro_f1``; largest slices
    first), ``small_slices`` and ``small_rows`` (how many values, and rows, had fewer
    than ``min_support`` rows and so were not scored: their scores would be noise),
    ``best`` and ``worst`` (``{"value", "macro_f1"}``, ``None`` when no value was scored)
    and ``gap`` (best minus worst macro-F1, ``None`` when no value was scored).

    Raises:
        ValueError: a column has not one value per row, ``min_support`` < 1, or bad
            labels (see :func:`classification_metrics`).
    """
    if min_support < 1:
        raise ValueError(f"min_support must be >= 1, got {min_support}")
    labels = _check_labels(labels)
    t, p = _encode_pair(y_true, y_pred, labels)
    n_labels = len(labels)
    out: dict[str, Any] = {}
    for column, raw_values in slices.items():
        if len(raw_values) != len(t):
            raise ValueError(
                f"slice column {column!r} has {len(raw_values)} values for {len(t)} rows"
            )
        keys = ["(missing)" if v is None or v == "" else str(v) for v in raw_values]
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        values: dict[str, dict[str, Any]] = {}
        small, small_rows = 0, 0
        for key, rows in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            if len(rows) < min_support:
                small += 1
                small_rows += len(rows)
                continue
            idx = np.asarray(rows)
            scores = _scores_from_counts(*_counts(t[idx], p[idx], n_labels))
            values[key] = {
                "n": len(rows),
                "accuracy": float(scores["accuracy"]),
                "macro_f1": float(scores["macro_f1"]),
            }
        best = worst = None
        gap = None
        if values:
            best_key = max(values, key=lambda k: values[k]["macro_f1"])
            worst_key = min(values, key=lambda k: values[k]["macro_f1"])
            best = {"value": best_key, "macro_f1": values[best_key]["macro_f1"]}
            worst = {"value": worst_key, "macro_f1": values[worst_key]["macro_f1"]}
            gap = best["macro_f1"] - worst["macro_f1"]
        out[str(column)] = {
            "values": values,
            "small_slices": small,
            "small_rows": small_rows,
            "min_support": min_support,
            "best": best,
            "worst": worst,
            "gap": gap,
        }
    return out


def worst_slice(slices: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The scored slice with the lowest macro-F1 over all columns of :func:`slice_metrics`.

    Returns ``{"column", "value", "macro_f1"}``, or ``None`` when nothing was scored.
    """
    found: dict[str, Any] | None = None
    for column, result in (slices or {}).items():
        worst = result.get("worst") if isinstance(result, Mapping) else None
        if worst and (found is None or worst["macro_f1"] < found["macro_f1"]):
            found = {"column": column, "value": worst["value"], "macro_f1": worst["macro_f1"]}
    return found


# ----------------------------------------------------------------------------- mistakes


def confident_mistakes(
    texts: Sequence[str],
    y_true: Sequence[str],
    y_pred: Sequence[str],
    proba: np.ndarray | None,
    labels: Sequence[str],
    *,
    k: int = 20,
) -> list[dict[str, Any]]:
    """The ``k`` wrong predictions with the highest probability on the predicted label.

    Each is ``{"text", "label", "predicted", "confidence"}``, most confident first (ties
    keep the row order). Without ``proba`` the confidence is ``None`` and the first
    ``k`` mistakes in row order are returned.

    Raises:
        ValueError: lengths differ, ``k`` < 0, or bad labels or ``proba`` (see
            :func:`classification_metrics`).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    labels = _check_labels(labels)
    t, p = _encode_pair(y_true, y_pred, labels)
    if len(texts) != len(t):
        raise ValueError(f"texts has {len(texts)} rows, y_true has {len(t)}")
    wrong = np.flatnonzero(t != p)
    confidence: np.ndarray | None = None
    if proba is not None:
        probs = _check_proba(proba, len(t), len(labels))
        confidence = probs[np.arange(len(t)), p]
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    return [
        {
            "text": texts[i],
            "label": labels[t[i]],
            "predicted": labels[p[i]],
            "confidence": float(confidence[i]) if confidence is not None else None,
        }
        for i in wrong[:k].tolist()
    ]


# ----------------------------------------------------------------------------- verdict


def _points(value: float, *, sign: bool = False) -> str:
    """A score difference in points (× 100, one decimal) with a true minus sign."""
    text = f"{value * 100:+.1f}" if sign else f"{value * 100:.1f}"
    return text.replace("-", "\u2212")


def _range(lo: float, hi: float) -> str:
    """A points interval: ``2.8–5.3``, or ``−0.9 to 2.1`` when a bound is negative."""
    joiner = "\u2013" if lo >= 0 and hi >= 0 else " to "
    return f"{_points(lo)}{joiner}{_points(hi)}"


def verdict(
    model_f1: float,
    baseline_f1: float,
    comparison: Mapping[str, Any] | None,
    worst_slice: Mapping[str, Any] | None,
    *,
    model_name: str,
    baseline_name: str,
) -> str:
    """One sentence saying whether the model is measurably better than the baseline.

    ``comparison`` is :func:`paired_bootstrap` of model minus baseline. When its interval
    is above zero the model beats the baseline, below zero it is worse ("keep the
    baseline"), otherwise the difference is within the noise. Without an interval the
    sentence gives the plain difference and says that it is untested. ``worst_slice``
    (from :func:`worst_slice`) is named at the end when given. Differences are in
    macro-F1 points (× 100, one decimal).
    """
    comparison = comparison or {}
    diff = comparison.get("diff")
    if diff is None or not math.isfinite(float(diff)):
        diff = model_f1 - baseline_f1
    diff = float(diff)
    ci = comparison.get("ci")
    level = float(comparison.get("confidence") or 0.95)
    ci_name = f"{level * 100:.0f}% CI"
    baseline = f"the {baseline_name} baseline"
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        sentence = (
            f"{model_name} scores {_points(diff, sign=True)} macro-F1 points against {baseline} "
            f"({model_f1:.2f} vs {baseline_f1:.2f}; no confidence interval, so not tested)"
        )
    else:
        lo, hi = float(ci[0]), float(ci[1])
        if lo > 0:
            sentence = (
                f"{model_name} beats {baseline} by {_points(diff, sign=True)} macro-F1 points "
                f"({ci_name} {_range(lo, hi)})"
            )
        elif hi < 0:
            sentence = (
                f"{model_name} is worse than {baseline} by {_points(-diff)} macro-F1 points "
                f"({ci_name} {_range(-hi, -lo)}): keep the baseline"
            )
        else:
            sentence = (
                f"{model_name} is not measurably better than {baseline} "
                f"({_points(diff, sign=True)} points, {ci_name} {_range(lo, hi)})"
            )
    if worst_slice:
        where = f"{worst_slice.get('column')}={worst_slice.get('value')}"
        sentence += f"; worst slice: {where} {float(worst_slice['macro_f1']):.2f}"
    return sentence + "."
