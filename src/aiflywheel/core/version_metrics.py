"""A registered version's figures, typed: one reader of ``model_versions.metrics``.

The store keeps the JSON each task wrote (``train.summarize``, ``assistant_summary``,
compression rows, the gate result merged in by retrain and compress); the CLI, promotion,
the API and each task's ``quality`` read it through ``VersionMetrics.of(row)`` instead of
string keys. Unknown keys are kept (``extra``), so a task can add figures without a change
here; the stored JSON is never rewritten by this reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class GateResult(BaseModel):
    """The promotion gate's decision on a candidate (``metrics["gate"]``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    passed: bool = False
    reason: str = ""


class VersionMetrics(BaseModel):
    """The figures stored with a model version.

    Classifiers: ``macro_f1`` (with its 95% ``macro_f1_ci``), ``accuracy``, the baseline's
    macro-F1 and whether it was beaten, the ``verdict`` sentence. Assistants: answer
    accuracy, hit@5, handoff precision/recall. Either may carry a ``gate`` result.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    macro_f1: float | None = None
    macro_f1_ci: tuple[float, float] | None = None
    accuracy: float | None = None
    baseline_name: str | None = None
    baseline_macro_f1: float | None = None
    beats_baseline: bool | None = None
    verdict: str = ""
    gate: GateResult | None = None
    test_rows: int | None = None
    train_seconds: float | None = None
    parent_version: int | None = None
    answer_accuracy: float | None = None
    answer_accuracy_ci: tuple[float, float] | None = None
    hit_at_5: float | None = Field(None, alias="hit@5")
    handoff_precision: float | None = None
    handoff_recall: float | None = None

    @field_validator("verdict", mode="before")
    @classmethod
    def _no_verdict_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @classmethod
    def of(cls, source: Any) -> VersionMetrics:
        """The metrics of a ``ModelVersion`` row (or of its ``metrics`` mapping)."""
        if isinstance(source, VersionMetrics):
            return source
        raw = source if isinstance(source, Mapping) else getattr(source, "metrics", None)
        return cls.model_validate(dict(raw or {}))

    @property
    def extra(self) -> dict[str, Any]:
        """Figures this reader has no field for (e.g. compression's ``size_mb``)."""
        return dict(self.model_extra or {})

    @property
    def refused_by_gate(self) -> bool:
        return self.gate is not None and not self.gate.passed

    def headline(self) -> dict[str, Any]:
        """The figures the API lists per version (``GET /v1/features/{name}``)."""
        return {
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "baseline_macro_f1": self.baseline_macro_f1,
            "beats_baseline": self.beats_baseline,
            "test_rows": self.test_rows,
        }
