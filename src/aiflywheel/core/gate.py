"""The one promotion gate: checks as data, shared by retrain and compress.

A check is a measured value, a threshold and a comparison; the gate passes when every
check passes. Each check carries both numbers into ``gate.json``, the version's metrics
and the audit event, so "why was v7 refused?" is answered by figures, not prose::

    gate = Gate([
        at_least("macro-F1 gain", gain, config.min_macro_f1_gain, unit="points"),
        above("significance (lower 95% CI of the gain)", ci_low, 0.0, unit="points"),
        at_most("largest slice drop", worst_drop, config.max_slice_drop, unit="points"),
    ])
    gate.passed, gate.reason("candidate is better: ..."), gate.to_json()
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_NEEDS = {">=": "at least", ">": "above", "<=": "at most", "<": "below"}


@dataclass(frozen=True)
class GateCheck:
    """One check: ``measured <op> threshold``; ``note`` adds context for people."""

    check: str
    measured: float | None
    op: str
    threshold: float
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.measured is None:  # nothing to measure (e.g. no slice had enough rows)
            return True
        if isinstance(self.measured, float) and math.isnan(self.measured):
            return False
        return _COMPARE[self.op](self.measured, self.threshold)

    @property
    def detail(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        needs = f"needs {_NEEDS[self.op]} {self.threshold:+g}{unit}"
        if self.measured is None:
            measured = "not measured"
        elif self.unit == "points":
            measured = f"{self.measured:+.2f}{unit}"
        else:
            measured = f"{self.measured:.4g}{unit}"
        note = f"; {self.note}" if self.note else ""
        return f"{measured} ({needs}){note}"

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "passed": self.passed,
            "measured": self.measured,
            "op": self.op,
            "threshold": self.threshold,
            "unit": self.unit,
            "detail": self.detail,
        }


def at_least(check: str, measured: float | None, threshold: float, **kw: str) -> GateCheck:
    return GateCheck(check, measured, ">=", threshold, **kw)


def above(check: str, measured: float | None, threshold: float, **kw: str) -> GateCheck:
    return GateCheck(check, measured, ">", threshold, **kw)


def at_most(check: str, measured: float | None, threshold: float, **kw: str) -> GateCheck:
    return GateCheck(check, measured, "<=", threshold, **kw)


@dataclass
class Gate:
    """A set of checks and the decision they make together."""

    checks: Sequence[GateCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def reason(self, when_passed: str, *, kept: str = "kept the champion") -> str:
        """``when_passed`` if every check passed, else which checks failed and by how much."""
        if self.passed:
            return when_passed
        return f"{kept}: " + "; ".join(f"{c.check} failed ({c.detail})" for c in self.failed)

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.checks]


def holds_out(feature: str, feedback_id: int, share: float) -> bool:
    """Whether a feedback item is kept out of training to judge both versions (stable: a
    hash of its id, so the same item stays held out in every retrain)."""
    digest = hashlib.sha256(f"{feature}:{feedback_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class GateResult:
    """Champion and candidate on the same rows, the checks, and the decision."""

    passed: bool
    reason: str
    checks: list[dict[str, Any]]
    champion: dict[str, Any]
    candidate: dict[str, Any]
    comparison: dict[str, Any]
    slice_drops: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


SCORE_ROWS = (("test", "frozen test"), ("feedback", "held-out feedback"), ("all", "both"))


@dataclass
class RetrainResult:
    """What a retrain did: the data it used, the candidate, the gate, the decision."""

    feature: str
    champion_version: int
    candidate_version: int
    decision: str
    gate: GateResult
    data: dict[str, int]
    run_dir: Path
    audit_id: int
    metric: str
    score_rows: tuple[tuple[str, str], ...] = SCORE_ROWS


def classifier_gate(
    champion_slices: dict[str, Any],
    candidate_slices: dict[str, Any],
    comparison: dict[str, Any],
    config: Any,
) -> tuple[Gate, list[dict[str, Any]], float, float, float]:
    """The gate every classifier's retrain applies (text and images alike): the macro-F1
    gain (points) over the champion on the same rows, optionally its CI's lower bound above
    zero, and the largest drop on any slice, with the recipe's ``gate`` thresholds.

    ``*_slices`` are ``metrics.classification.slice_metrics`` results and ``comparison`` a
    ``paired_bootstrap`` of candidate against champion. Returns (gate, slice drops, worst
    first, gain, CI low, CI high), the last three in points."""
    drops = []
    for column, result in champion_slices.items():
        for value, figures in result["values"].items():
            other = candidate_slices[column]["values"].get(value)
            if other is None:
                continue
            drops.append(
                {
                    "slice": f"{column}={value}",
                    "rows": figures["n"],
                    "champion": figures["macro_f1"],
                    "candidate": other["macro_f1"],
                    "drop_points": round(100 * (figures["macro_f1"] - other["macro_f1"]), 2),
                }
            )
    drops.sort(key=lambda d: -d["drop_points"])
    gain = 100 * comparison["diff"]
    lo, hi = (100 * x for x in comparison["ci"])
    worst = drops[0] if drops else None
    checks = [at_least("macro-F1 gain", gain, config.min_macro_f1_gain, unit="points")]
    if config.require_significance:
        checks.append(
            above(
                "significance (lower bound of the gain's 95% CI)",
                lo,
                0.0,
                unit="points",
                note=f"CI {lo:+.2f} to {hi:+.2f}",
            )
        )
    checks.append(
        at_most(
            "largest slice drop",
            None if worst is None else worst["drop_points"],
            config.max_slice_drop,
            unit="points",
            note="no slice had enough rows to score" if worst is None else worst["slice"],
        )
    )
    return Gate(checks), drops, gain, lo, hi
