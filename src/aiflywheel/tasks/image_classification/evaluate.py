"""Evaluate an image classifier against the pixel baseline on the frozen test split.

Macro-F1 with a bootstrap CI for both, the paired-bootstrap gain of the model, the
verdict, confusion and calibration (``metrics.classification``), slices by source format
and orientation, and the most confident mistakes with an occlusion saliency map (how much
the predicted label's probability falls when a patch is greyed out).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from aiflywheel.metrics.classification import (
    bootstrap_ci,
    classification_metrics,
    paired_bootstrap,
    slice_metrics,
    verdict,
    worst_slice,
)
from aiflywheel.tasks.image_classification.dataset import ImageSet
from aiflywheel.tasks.image_classification.images import png_bytes


def orientation(meta: dict[str, Any]) -> str:
    w, h = meta.get("width", 0), meta.get("height", 0)
    return "square" if w == h else ("landscape" if w > h else "portrait")


def image_slices(part: ImageSet) -> dict[str, list[str]]:
    return {
        "format": [str(m.get("format", "?")) for m in part.meta],
        "orientation": [orientation(m) for m in part.meta],
    }


def _margins(model, batch: np.ndarray, label_index: int) -> np.ndarray:
    """The label's logit minus the best other logit (log-probabilities when the model
    gives no logits): unlike a probability it still moves when the model is saturated."""
    logits = (
        model.logits(batch)
        if hasattr(model, "logits")
        else np.log(np.clip(model.predict_proba(batch), 1e-12, 1.0))
    )
    others = np.delete(logits, label_index, axis=1)
    return logits[:, label_index] - others.max(axis=1)


def occlusion_saliency(model, image: np.ndarray, label_index: int, patch: int | None = None):
    """(H, W) in [0, 1]: how much greying out each patch lowers the predicted label's margin."""
    size = image.shape[0]
    patch = patch or max(2, size // 7)
    stride = max(1, patch // 2)
    base = float(_margins(model, image[None], label_index)[0])
    starts = list(range(0, max(1, size - patch + 1), stride))
    positions = [(y, x) for y in starts for x in starts]
    batch = []
    for y, x in positions:
        copy = image.copy()
        copy[y : y + patch, x : x + patch] = 128
        batch.append(copy)
    margins = _margins(model, np.stack(batch), label_index)
    heat = np.zeros((size, size), np.float64)
    hits = np.zeros((size, size), np.float64)
    for k, (y, x) in enumerate(positions):
        heat[y : y + patch, x : x + patch] += max(0.0, base - float(margins[k]))
        hits[y : y + patch, x : x + patch] += 1
    heat /= np.maximum(hits, 1)
    top = heat.max()
    return heat / top if top > 0 else heat


def overlay_png(image: np.ndarray, heat: np.ndarray | None, scale: int = 3) -> bytes:
    """The image (upscaled), with the saliency in red on top when given."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image.copy()
    rgb = rgb.astype(np.float64)
    if heat is not None:
        alpha = 0.6 * heat[..., None]
        rgb = rgb * (1 - alpha) + np.array([255.0, 0, 0]) * alpha
    rgb = np.kron(rgb.clip(0, 255).astype(np.uint8), np.ones((scale, scale, 1), np.uint8))
    return png_bytes(rgb)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def confident_mistakes(model, test: ImageSet, proba: np.ndarray, limit: int) -> list[dict]:
    labels = model.labels
    pred = proba.argmax(axis=1)
    wrong = [i for i in range(len(test)) if labels[pred[i]] != test.labels[i]]
    wrong.sort(key=lambda i: -proba[i, pred[i]])
    out = []
    for i in wrong[:limit]:
        heat = occlusion_saliency(model, test.pixels[i], int(pred[i]))
        out.append(
            {
                "id": test.ids[i],
                "true": test.labels[i],
                "predicted": labels[pred[i]],
                "confidence": round(float(proba[i, pred[i]]), 4),
                "image": data_uri(overlay_png(test.pixels[i], None)),
                "saliency": data_uri(overlay_png(test.pixels[i], heat)),
            }
        )
    return out


def evaluate_against_baseline(
    model,
    baseline,
    test: ImageSet,
    *,
    resamples: int,
    seed: int,
    min_slice_rows: int,
    mistakes: int,
    model_seconds: float,
    baseline_seconds: float,
) -> dict[str, Any]:
    labels = sorted(set(model.labels) | set(test.labels))
    y_true = list(test.labels)
    results: dict[str, Any] = {}
    preds: dict[str, list[str]] = {}
    probas: dict[str, np.ndarray] = {}
    for key, clf, seconds in (
        ("model", model, model_seconds),
        ("baseline", baseline, baseline_seconds),
    ):
        proba = clf.predict_proba(test.pixels)
        full = np.zeros((len(test), len(labels)))
        for j, label in enumerate(clf.labels):
            full[:, labels.index(label)] = proba[:, j]
        pred = [labels[k] for k in full.argmax(axis=1)]
        preds[key], probas[key] = pred, proba
        metrics = classification_metrics(y_true, pred, full, labels)
        results[key] = {
            "name": clf.name,
            "metrics": metrics,
            "macro_f1_ci": list(
                bootstrap_ci(y_true, pred, labels, n_resamples=resamples, seed=seed)
            ),
            "train_seconds": round(seconds, 3),
            "slices": slice_metrics(
                y_true, pred, image_slices(test), labels, min_support=min_slice_rows
            ),
        }
    comparison = paired_bootstrap(
        y_true, preds["model"], preds["baseline"], labels, n_resamples=resamples, seed=seed
    )
    comparison["beats_baseline"] = bool(comparison["ci"][0] > 0)
    model_f1 = results["model"]["metrics"]["macro_f1"]
    baseline_f1 = results["baseline"]["metrics"]["macro_f1"]
    results["comparison"] = comparison
    results["verdict"] = verdict(
        model_f1,
        baseline_f1,
        comparison,
        worst_slice(results["model"]["slices"]),
        model_name=model.name,
        baseline_name=baseline.name,
    )
    results["test_rows"] = len(test)
    results["labels"] = labels
    results["mistakes"] = confident_mistakes(model, test, probas["model"], mistakes)
    return results
