"""VersionMetrics: one typed reader of the figures stored with a model version."""

from __future__ import annotations

from types import SimpleNamespace

from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.tasks.assistant.task import TASK as ASSISTANT
from aiflywheel.tasks.text_classification.task import TASK as CLASSIFIER

CLASSIFIER_METRICS = {
    "macro_f1": 0.81,
    "macro_f1_ci": [0.75, 0.86],
    "accuracy": 0.83,
    "baseline_macro_f1": 0.7,
    "beats_baseline": True,
    "gain_ci": [0.01, 0.2],
    "test_rows": 120,
    "train_seconds": 4.2,
    "verdict": "beats the baseline.",
    "gate": {"passed": False, "reason": "macro-F1 fell", "checks": []},
    "size_mb": 1.5,
}


def test_classifier_figures_are_typed_and_unknown_keys_kept() -> None:
    m = VersionMetrics.of(SimpleNamespace(metrics=CLASSIFIER_METRICS))
    assert (m.macro_f1, m.macro_f1_ci, m.accuracy, m.test_rows) == (0.81, (0.75, 0.86), 0.83, 120)
    assert m.beats_baseline is True and m.verdict == "beats the baseline."
    assert m.gate is not None and not m.gate.passed and m.gate.reason == "macro-F1 fell"
    assert m.refused_by_gate
    assert m.extra == {"gain_ci": [0.01, 0.2], "size_mb": 1.5}
    assert m.headline() == {
        "macro_f1": 0.81,
        "accuracy": 0.83,
        "baseline_macro_f1": 0.7,
        "beats_baseline": True,
        "test_rows": 120,
    }
    quality, baseline = CLASSIFIER.quality(m).cells()
    assert quality == "macro-F1 0.810 [0.750, 0.860]" and baseline == "0.700 (beaten)"


def test_assistant_and_empty_figures() -> None:
    m = VersionMetrics.of(
        {
            "task": "assistant",
            "hit@5": 0.9,
            "answer_accuracy": 0.7,
            "handoff_precision": 0.8,
            "handoff_recall": 0.6,
            "verdict": None,
        }
    )
    assert m.hit_at_5 == 0.9 and m.verdict == "" and m.gate is None and not m.refused_by_gate
    assert ASSISTANT.quality(m).cells()[0] == (
        "answer accuracy 0.700, hit@5 0.90, handoff P 0.80, handoff R 0.60"
    )
    empty = VersionMetrics.of({})
    assert empty.macro_f1 is None and ASSISTANT.quality(empty).cells() == ("not evaluated", "–")
