"""The gate between two image classifiers on the same images: the frozen test split plus
held-out feedback (a retrain), or the test split alone (GAN-augmented vs plain)."""

from __future__ import annotations

from typing import Any

from aiflywheel.core.gate import GateResult, classifier_gate
from aiflywheel.metrics.classification import (
    classification_metrics,
    paired_bootstrap,
    slice_metrics,
)
from aiflywheel.tasks.image_classification.dataset import ImageSet


def compare_versions(
    champion,
    candidate,
    test: ImageSet,
    holdout: ImageSet,
    recipe,
    *,
    kept: str = "kept the champion",
) -> GateResult:
    """Both versions on the frozen test split plus held-out feedback; the shared gate."""
    rows = test.concat(holdout)
    y_true = list(rows.labels)
    labels = sorted(set(y_true) | set(champion.labels) | set(candidate.labels))
    champ = [p.label for p in champion.predict(rows.pixels)]
    cand = [p.label for p in candidate.predict(rows.pixels)]
    n_test = len(test)

    def scores(pred: list[str]) -> dict[str, Any]:
        out = {
            "all": classification_metrics(y_true, pred, None, labels)["macro_f1"],
            "test": classification_metrics(y_true[:n_test], pred[:n_test], None, labels)[
                "macro_f1"
            ],
            "accuracy": classification_metrics(y_true, pred, None, labels)["accuracy"],
        }
        if len(holdout):
            out["feedback"] = classification_metrics(y_true[n_test:], pred[n_test:], None, labels)[
                "macro_f1"
            ]
        return out

    comparison = paired_bootstrap(
        y_true,
        cand,
        champ,
        labels,
        n_resamples=recipe.evaluate.bootstrap_resamples,
        seed=recipe.seed,
    )
    slices = {"source": ["test"] * n_test + ["feedback"] * len(holdout)}
    min_rows = recipe.evaluate.min_slice_rows
    champ_slices = slice_metrics(y_true, champ, slices, labels, min_support=min_rows)
    cand_slices = slice_metrics(y_true, cand, slices, labels, min_support=min_rows)
    gate, drops, gain, lo, hi = classifier_gate(champ_slices, cand_slices, comparison, recipe.gate)
    reason = gate.reason(
        kept=kept,
        when_passed=f"candidate is better: {gain:+.2f} macro-F1 points (95% CI {lo:+.2f} to "
        f"{hi:+.2f}) on {n_test} frozen test images + {len(holdout)} held-out feedback",
    )
    return GateResult(
        passed=gate.passed,
        reason=reason,
        checks=gate.to_json(),
        champion=scores(champ),
        candidate=scores(cand),
        comparison={
            **comparison,
            "rows": len(rows),
            "test_rows": n_test,
            "feedback_rows": len(holdout),
        },
        slice_drops=drops,
    )
