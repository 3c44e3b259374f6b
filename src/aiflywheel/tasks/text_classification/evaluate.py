"""Evaluate: a trained classifier against the TF-IDF baseline on the frozen test split.

Writes ``metrics.json`` (every figure) and ``report.html`` (self-contained, its first
line the verdict) into a run folder. The metrics themselves are pure functions in
``evaluate_metrics``; this module runs the models and assembles the result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.data.dataset import Dataset
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.metrics.classification import (
    bootstrap_ci,
    classification_metrics,
    confident_mistakes,
    paired_bootstrap,
    slice_metrics,
    verdict,
    worst_slice,
)
from aiflywheel.recipe import EvaluateConfig
from aiflywheel.tasks.text_classification.explain import explain_prediction
from aiflywheel.tasks.text_classification.report_html import render_eval_report_html

EVAL_CHUNK = 256


def _scored(model, test: Dataset, desc: str | None = None) -> tuple[list[str], np.ndarray]:
    """Predicted labels and probabilities; with ``desc``, a progress bar over chunks."""
    texts = test.texts
    if desc is None or len(texts) <= EVAL_CHUNK:
        proba = model.predict_proba(texts)
    else:
        from tqdm.auto import tqdm

        parts = []
        with tqdm(total=len(texts), desc=desc, unit="text") as bar:
            for start in range(0, len(texts), EVAL_CHUNK):
                chunk = texts[start : start + EVAL_CHUNK]
                parts.append(np.asarray(model.predict_proba(chunk)))
                bar.update(len(chunk))
        proba = np.concatenate(parts)
    predicted = [model.labels[int(i)] for i in proba.argmax(axis=1)]
    return predicted, proba


def _aligned(proba: np.ndarray, model_labels: list[str], labels: list[str]) -> np.ndarray:
    """Probabilities with columns in ``labels`` order (labels unseen by the model get 0)."""
    out = np.zeros((proba.shape[0], len(labels)), dtype=np.float64)
    for j, name in enumerate(model_labels):
        out[:, labels.index(name)] = proba[:, j]
    return out


def evaluate_against_baseline(
    model,
    baseline,
    test: Dataset,
    config: EvaluateConfig,
    *,
    feature: str,
    model_name: str,
    model_seconds: float,
    baseline_seconds: float,
    seed: int = 0,
    cross_validation: dict | None = None,
) -> dict[str, Any]:
    """The metrics dict of a model and its baseline on ``test`` (see ``metrics.json``)."""
    y_true = [r.label for r in test]
    labels = sorted(set(model.labels) | set(baseline.labels) | set(y_true))
    model_pred, model_proba = _scored(model, test, f"evaluating {model_name}")
    base_pred, base_proba = _scored(baseline, test, f"evaluating {baseline.name}")
    model_proba = _aligned(model_proba, model.labels, labels)
    base_proba = _aligned(base_proba, baseline.labels, labels)
    n = config.bootstrap_resamples

    columns = config.slices
    if columns is None:
        columns = sorted({key for r in test for key in r.meta})
    slices = (
        slice_metrics(
            y_true,
            model_pred,
            {c: [r.meta.get(c, "") for r in test] for c in columns},
            labels,
            min_support=config.min_slice_rows,
        )
        if columns
        else {}
    )

    comparison = paired_bootstrap(y_true, model_pred, base_pred, labels, n_resamples=n, seed=seed)
    comparison["beats_baseline"] = bool(comparison["ci"][0] > 0)
    model_metrics = classification_metrics(y_true, model_pred, model_proba, labels)
    base_metrics = classification_metrics(y_true, base_pred, base_proba, labels)

    mistakes = confident_mistakes(
        test.texts, y_true, model_pred, model_proba, labels, k=config.explain_mistakes
    )
    for mistake in mistakes:
        pieces = explain_prediction(model, mistake["text"], label=mistake["predicted"])
        mistake["attributions"] = [[token, score] for token, score in pieces]

    result = {
        "feature": feature,
        "version": None,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels": labels,
        "test_rows": len(test),
        "model": {
            "name": model_name,
            "alias": getattr(model, "model_name", model_name),
            "method": model_name.split("/")[-1],
            "train_seconds": round(model_seconds, 2),
            "metrics": model_metrics,
            "macro_f1_ci": list(bootstrap_ci(y_true, model_pred, labels, n_resamples=n, seed=seed)),
        },
        "baseline": {
            "name": baseline.name,
            "train_seconds": round(baseline_seconds, 2),
            "metrics": base_metrics,
            "macro_f1_ci": list(bootstrap_ci(y_true, base_pred, labels, n_resamples=n, seed=seed)),
        },
        "comparison": comparison,
        "slices": slices,
        "cross_validation": cross_validation,
        "mistakes": mistakes,
    }
    result["verdict"] = verdict(
        model_metrics["macro_f1"],
        base_metrics["macro_f1"],
        comparison,
        worst_slice(slices),
        model_name=model_name,
        baseline_name=baseline.name,
    )
    return result


def cross_validate(
    make_and_fit: Callable[[Dataset], Any], pool: Dataset, folds: list[list[str]]
) -> dict[str, Any]:
    """Macro-F1 per fold: fit on the other folds' rows, score the held-out fold."""
    by_id = {r.id: r for r in pool}
    scores = []
    for fold in folds:
        held = set(fold)
        train = Dataset(r for r in pool if r.id not in held)
        test = Dataset(by_id[i] for i in fold if i in by_id)
        model = make_and_fit(train)
        predicted, _ = _scored(model, test)
        labels = sorted(set(model.labels) | {r.label for r in test})
        scores.append(
            classification_metrics([r.label for r in test], predicted, None, labels)["macro_f1"]
        )
    return {
        "k": len(folds),
        "macro_f1_mean": float(np.mean(scores)),
        "macro_f1_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        "per_fold": [float(s) for s in scores],
    }


def write_evaluation(metrics: dict[str, Any], out_dir: Path) -> None:
    """``metrics.json`` and ``report.html`` into ``out_dir``."""
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "report.html", render_eval_report_html(metrics))
