"""The evaluation report page: self-contained, escaped, verdict first, robust to empty parts."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiflywheel.metrics.classification import (
    bootstrap_ci,
    classification_metrics,
    confident_mistakes,
    paired_bootstrap,
    slice_metrics,
    verdict,
    worst_slice,
)
from aiflywheel.tasks.text_classification.report_html import render_eval_report_html

sys.path.insert(0, str(Path(__file__).parent))
import report_checks as checks  # noqa: E402

NASTY = '<script>alert("x")</script> & co'
LABELS = ["billing", "退款", NASTY]


def _metrics(seed: int = 0) -> dict[str, Any]:
    """A metrics dict shaped like the one the evaluate stage writes."""
    rng = np.random.default_rng(seed)
    n = 300
    y = [str(v) for v in rng.choice(LABELS, n, p=[0.5, 0.3, 0.2])]
    channel = [
        str(v) for v in rng.choice(["email", "chat", NASTY, "fax"], n, p=[0.45, 0.45, 0.07, 0.03])
    ]

    def predict(accuracy: float) -> tuple[list[str], np.ndarray]:
        proba = rng.dirichlet(np.ones(len(LABELS)), size=n) * 0.3
        for i, label in enumerate(y):
            k = LABELS.index(label) if rng.random() < accuracy else int(rng.integers(len(LABELS)))
            proba[i, k] += 0.7
        return [LABELS[k] for k in proba.argmax(axis=1)], proba

    model_pred, model_proba = predict(0.92)
    base_pred, base_proba = predict(0.8)
    model_m = classification_metrics(y, model_pred, model_proba, LABELS)
    base_m = classification_metrics(y, base_pred, base_proba, LABELS)
    comparison = paired_bootstrap(y, model_pred, base_pred, LABELS, n_resamples=200)
    comparison["beats_baseline"] = comparison["ci"][0] > 0
    slices = slice_metrics(y, model_pred, {"channel": channel}, LABELS)
    texts = [f"ticket {i}: {NASTY}" for i in range(n)]
    mistakes = confident_mistakes(texts, y, model_pred, model_proba, LABELS, k=5)
    for m in mistakes:
        m["attributions"] = None
    mistakes[0]["attributions"] = [
        ["[CLS]", 0.0],
        ["refund", 0.9],
        ["##ed", 0.3],
        ["<b>", -0.5],
        ["twice", 0.0],
        ["[SEP]", 0.0],
    ]
    return {
        "feature": "support-tickets",
        "version": "v3",
        "generated_at": "2026-11-25T01:02:03+00:00",
        "labels": LABELS,
        "test_rows": n,
        "model": {
            "name": "e5-small/head",
            "alias": "e5-small",
            "method": "head",
            "train_seconds": 184.2,
            "metrics": model_m,
            "macro_f1_ci": list(bootstrap_ci(y, model_pred, LABELS, n_resamples=200)),
        },
        "baseline": {
            "name": "tfidf-char(1-3)+logreg",
            "train_seconds": 3.4,
            "metrics": base_m,
            "macro_f1_ci": list(bootstrap_ci(y, base_pred, LABELS, n_resamples=200)),
        },
        "comparison": comparison,
        "slices": slices,
        "cross_validation": {
            "k": 5,
            "macro_f1_mean": 0.871,
            "macro_f1_std": 0.012,
            "per_fold": [0.86, 0.88, 0.87, 0.855, 0.89],
        },
        "mistakes": mistakes,
        "verdict": verdict(
            model_m["macro_f1"],
            base_m["macro_f1"],
            comparison,
            worst_slice(slices),
            model_name="e5-small/head",
            baseline_name="TF-IDF",
        ),
    }


def _render(metrics: dict[str, Any]) -> tuple[str, ET.Element]:
    return checks.render(render_eval_report_html, metrics)


def test_page_is_self_contained_and_offline() -> None:
    # charts: confusion, reliability, confidence histogram
    checks.assert_self_contained(render_eval_report_html(_metrics()), charts=3)


def test_the_verdict_is_the_first_thing_on_the_page() -> None:
    metrics = _metrics()
    _, root = _render(metrics)
    body = root.find("body")
    assert body is not None
    first = body[0]
    assert first.get("id") == "verdict"
    first_text = next(t.strip() for t in body.itertext() if t.strip())
    assert first_text == metrics["verdict"]
    assert "beats the TF-IDF baseline" in first_text
    assert "verdict-ok" in first.get("class", "")


@pytest.mark.parametrize(
    ("ci", "level"),
    [([0.01, 0.05], "ok"), ([-0.02, 0.03], "warning"), ([-0.05, -0.01], "error"), (None, "info")],
)
def test_the_verdict_box_is_coloured_by_the_outcome(ci: list[float] | None, level: str) -> None:
    metrics = _metrics()
    metrics["comparison"] = {"diff": 0.02, "ci": ci, "p_value": 0.1} if ci else None
    _, root = _render(metrics)
    assert f"verdict-{level}" in checks.section(root, "verdict").get("class", "")


def test_numbers_are_shown() -> None:
    metrics = _metrics()
    _, root = _render(metrics)
    model_f1 = metrics["model"]["metrics"]["macro_f1"]
    checks.assert_shows(
        root,
        (
            f"{model_f1:.3f}",
            "300",
            "3.1 min",
            "3.40 s",
            "54.2× the baseline",
            "tfidf-char(1-3)+logreg",
            "2026-11-25 01:02:03 UTC",
            "0.871 ± 0.012",
            "0.855",
            "expected calibration error",
        ),
    )
    table = checks.page_text(checks.section(root, "comparison"))
    assert "ROC-AUC" not in table  # three labels: no ROC-AUC, so no empty row


def test_text_from_the_data_is_escaped() -> None:
    metrics = _metrics()
    metrics["feature"] = checks.BOLD_FEATURE
    metrics["verdict"] = f"{NASTY} beats it"
    page, root = _render(metrics)
    # the last mistake is shown as plain text, without highlighted tokens
    checks.assert_escaped(page, root, shown=(NASTY, "退款", metrics["mistakes"][-1]["text"]))


def test_attributions_are_highlighted_tokens() -> None:
    _, root = _render(_metrics())
    mistakes = checks.section(root, "mistakes")
    spans = [s for s in mistakes.iter("span") if "tok" in s.get("class", "").split()]
    assert [s.text for s in spans] == ["refund", "ed", "<b>", "twice"]  # no [CLS] or [SEP]
    styles = [s.get("style", "") for s in spans]
    assert "rgba(207, 34, 46, 0.68)" in styles[0]  # strongest push toward the prediction
    assert "207, 34, 46" in styles[1]
    assert "26, 127, 55" in styles[2]  # pushes away: green
    assert styles[3] == ""  # no push, no colour
    assert spans[0].get("title") == "+0.900"
    cell = next(td for td in mistakes.iter("td") if "mistake-text" in td.get("class", ""))
    assert "".join(cell.itertext()) == "refunded <b> twice"


def test_slices_show_best_worst_and_the_gap() -> None:
    metrics = _metrics()
    metrics["slices"] = {
        "channel": {
            "values": {
                "chat": {"n": 120, "accuracy": 0.95, "macro_f1": 0.93},
                NASTY: {"n": 100, "accuracy": 0.85, "macro_f1": 0.81},
            },
            "small_slices": 2,
            "small_rows": 15,
            "min_support": 20,
            "best": {"value": "chat", "macro_f1": 0.93},
            "worst": {"value": NASTY, "macro_f1": 0.81},
            "gap": 0.12,
        }
    }
    _, root = _render(metrics)
    slices = checks.section(root, "slices")
    marks = [tr.get("class") for tr in slices.iter("tr") if tr.get("class")]
    assert marks == ["best", "worst"]
    gap = next(b for b in slices.iter("b") if "points" in (b.text or ""))
    assert gap.text == "12.0 points"
    assert gap.get("class") == "bad"
    checks.assert_shows(
        slices,
        (NASTY, "2 values with fewer than 20 test rows (15 rows in all) are not scored"),
    )


def test_many_labels_are_merged_in_the_confusion_matrix() -> None:
    labels = [f"类别{i:02d}" for i in range(30)]
    matrix = [
        [10 if i == j else (1 if j == (i + 1) % 30 else 0) for j in range(30)] for i in range(30)
    ]
    metrics = _metrics()
    metrics["model"]["metrics"]["confusion"] = {"labels": labels, "matrix": matrix}
    _, root = _render(metrics)
    confusion = checks.section(root, "confusion")
    chart = confusion.find(".//svg")
    assert chart is not None
    texts = {t.text for t in chart.iter("text")}
    assert "other (11 labels)" in texts
    assert "11 labels with the fewest test rows are merged" in checks.page_text(confusion)


def test_cross_validation_is_left_out_when_absent() -> None:
    metrics = _metrics()
    metrics["cross_validation"] = None
    _, root = _render(metrics)
    assert root.find(".//section[@id='cross-validation']") is None


def test_missing_and_empty_parts_render() -> None:
    metrics = _metrics()
    metrics["model"]["metrics"]["calibration"] = None
    metrics["baseline"] = None
    metrics["comparison"] = None
    metrics["slices"] = {}
    metrics["mistakes"] = []
    metrics["verdict"] = ""
    metrics["generated_at"] = "not a date"
    _, root = _render(metrics)
    checks.assert_shows(
        root,
        (
            "No verdict was recorded",
            "no probabilities",
            "No metadata columns to slice by",
            "No mistakes were recorded",
            "not a date",
        ),
    )


@pytest.mark.parametrize(
    "metrics",
    [
        {},
        {"model": None, "baseline": None, "labels": None, "mistakes": None, "slices": None},
        {
            "model": {"metrics": {"per_class": {}, "confusion": {"labels": [], "matrix": []}}},
            "cross_validation": {"k": 5, "macro_f1_mean": None, "macro_f1_std": None},
            "mistakes": [{"text": "x", "attributions": [["", 0.5], [None]]}],
        },
    ],
)
def test_nearly_empty_metrics_render(metrics: dict[str, Any]) -> None:
    _, root = _render(metrics)
    assert root.findtext(".//h1") == "unnamed feature"
    assert "—" in checks.page_text(root)
