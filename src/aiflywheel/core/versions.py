"""Registered versions: load one by feature name, promote one, roll back.

``aiflywheel.load("review-sentiment")`` returns the champion (else the newest candidate)
as its task's predictor: ``.predict(texts)`` for classifiers, ``.ask(question)`` for
assistants. ``promote`` and ``rollback`` change the champion and write an audit event in
the same transaction; servers pick the change up by polling the store, so every decision
takes effect without a restart. Neither depends on the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiflywheel.core.registry import DEFAULT_TASK, get_task
from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.errors import ConflictError, ModelError
from aiflywheel.store import AuditEvent, Store, open_store


@dataclass
class LoadedModel:
    """A registered version, loaded by its task: ready to predict (or to answer)."""

    feature: str
    version: int
    status: str
    task: str
    predictor: Any

    @property
    def classifier(self) -> Any:
        """The loaded model object itself (kept under its round-1 name)."""
        return self.predictor

    @property
    def labels(self) -> list[str]:
        return list(getattr(self.predictor, "labels", []))

    def _needs(self, method: str) -> Any:
        found = getattr(self.predictor, method, None)
        if not callable(found):
            offers = "ask" if callable(getattr(self.predictor, "ask", None)) else "predict"
            raise ModelError(
                f"{self.feature} is a {self.task} feature; its versions have no .{method}() "
                f"(aiflywheel.load gives .ask() for assistants, .predict() for classifiers; "
                f"this one has .{offers}())"
            )
        return found

    def predict(self, texts: Sequence[str]) -> list:
        """A label and the probability of every label, per text (classifiers)."""
        return self._needs("predict")(texts)

    def ask(self, question: str, history: Sequence[dict] = ()) -> Any:
        """An answer with citations, or a handoff (assistants): an ``AssistantAnswer``
        (answer, citations, handoff, reason, answer_type, confidence, language)."""
        return self._needs("ask")(question, history)

    def explain(self, text: str, label: str | None = None) -> list[tuple[str, float]]:
        """Token attributions for one text (classifiers)."""
        from aiflywheel.tasks.text_classification.explain import explain_prediction

        self._needs("predict_proba")
        return explain_prediction(self.predictor, text, label=label)


def task_of(row) -> str:
    """The task a registered version belongs to (from the recipe it was trained with)."""
    return str((row.recipe or {}).get("task") or DEFAULT_TASK)


def parse_version_ref(ref: str) -> tuple[str, int | None]:
    """``feature`` or ``feature:3`` / ``feature:v3`` -> (feature, version or None)."""
    feature, _, version = ref.partition(":")
    if not version:
        return feature, None
    digits = version.removeprefix("v")
    if not digits.isdigit():
        raise ModelError(f"version in {ref!r} must be a number like {feature}:2, got {version!r}")
    return feature, int(digits)


def load(feature: str, version: int | None = None, *, store: Store | None = None) -> LoadedModel:
    """The champion of ``feature`` (else its newest candidate), or a given version."""
    if version is None:
        feature, version = parse_version_ref(feature)
    store = store or open_store()
    row = store.get_model_version(feature, version)
    if not Path(row.model_path).is_dir():
        raise ModelError(
            f"{feature} v{row.version}: model folder {row.model_path} is missing on this machine"
        )
    task = task_of(row)
    return LoadedModel(
        feature=feature,
        version=row.version,
        status=row.status,
        task=task,
        predictor=get_task(task).load_predictor(
            row.model_path, feature=feature, version=row.version, store=store
        ),
    )


# -- decisions: which version serves, and why ------------------------------------


def promote(
    store: Store,
    feature: str,
    version: int,
    *,
    actor: str,
    reason: str = "",
    force: bool = False,
) -> AuditEvent:
    """Make ``version`` the champion of ``feature``.

    A version that the promotion gate refused (``VersionMetrics.gate.passed`` false), or
    that did not beat its baseline (``VersionMetrics.beats_baseline`` false, even as the first
    champion), is promoted only with ``force`` and a reason; the audit event records the
    override. Otherwise the first champion of a feature needs no gate: there is nothing to
    compare against. Versions without a baseline comparison (assistants) are not checked.
    """
    row = store.get_model_version(feature, version)
    current = store.champion(feature)
    figures = VersionMetrics.of(row)
    refusal = None
    if figures.gate is not None and not figures.gate.passed:
        refusal = f"did not pass the promotion gate ({figures.gate.reason})"
    elif figures.beats_baseline is False:
        verdict = figures.verdict.strip().rstrip(".")
        refusal = "did not beat its baseline" + (f" ({verdict})" if verdict else "")
    refused = refusal is not None
    if refused and not force:
        raise ConflictError(
            f"{feature} v{version} {refusal}; promote with force and a reason to override"
        )
    if force and refused and not reason.strip():
        raise ConflictError("a forced promotion needs a reason (it is written to the audit log)")
    if not reason:
        reason = (
            f"first champion of {feature}"
            if current is None
            else f"manual promotion over v{current.version}"
        )
    details = {
        "to": version_summary(row),
        "from": version_summary(current) if current is not None else None,
        "forced": bool(force and refused),
    }
    return store.change_champion(
        feature, version, action="promote", actor=actor, reason=reason, details=details
    )


def rollback(
    store: Store,
    feature: str,
    *,
    actor: str,
    reason: str = "",
    to_version: int | None = None,
) -> AuditEvent:
    """Put back the champion that the current one replaced (or ``to_version``)."""
    current, previous = store.rollback_target(feature) if to_version is None else (None, to_version)
    if current is None:
        champion = store.champion(feature)
        if champion is None:
            raise ConflictError(f"feature {feature!r} has no champion to roll back")
        current = champion.version
    target = store.get_model_version(feature, previous)
    if target.version == current:
        raise ConflictError(f"{feature} v{current} is already the champion")
    details = {
        "to": version_summary(target),
        "from": version_summary(store.get_model_version(feature, current)),
    }
    return store.change_champion(
        feature,
        target.version,
        action="rollback",
        actor=actor,
        reason=reason or f"rolled back v{current} to v{target.version}",
        details=details,
        old_status="archived",
    )


def version_summary(row) -> dict[str, Any]:
    figures = VersionMetrics.of(row)
    return {
        "version": row.version,
        "model": f"{row.base_model}/{row.method}",
        "macro_f1": figures.macro_f1,
        "accuracy": figures.accuracy,
    }


def decide_candidate(
    store: Store,
    feature: str,
    *,
    champion_version: int,
    candidate_version: int,
    passed: bool,
    reason: str,
    actor: str,
    details: dict[str, Any],
) -> AuditEvent:
    """The gate's decision on a retrained candidate, audited: promoted, or rejected and kept
    out (the champion stays). Every task's retrain ends here."""
    if passed:
        return store.change_champion(
            feature,
            candidate_version,
            action="retrain",
            actor=actor,
            reason=reason,
            details=details,
        )
    store.set_model_status(feature, candidate_version, "rejected")
    return store.record_audit(
        feature,
        action="retrain",
        actor=actor,
        decision="kept",
        reason=reason,
        from_version=champion_version,
        to_version=candidate_version,
        details=details,
    )


def conclude_retrain(
    store: Store,
    feature: str,
    *,
    champion: Any,
    candidate_version: int,
    gate: Any,
    data: dict[str, Any],
    run_id: str,
    run_dir: Path,
    actor: str,
    metric: str,
    summary: Any = None,
    score_rows: Sequence[tuple[str, str]] | None = None,
    gate_recorded: bool = False,
) -> Any:
    """The end of every task's retrain: the gate's result written to the candidate's run
    (``gate.json``) and metrics (unless ``gate_recorded``: the task did it before its run
    was committed), its decision on the candidate, audited with both versions' summaries
    (``summary(row)``; ``version_summary`` by default), the gate's scores and checks, the
    data counts; then the ``RetrainResult`` the CLI prints."""
    from aiflywheel.core.gate import RetrainResult
    from aiflywheel.files import write_json_atomic

    if not gate_recorded:
        write_json_atomic(run_dir / "gate.json", gate.to_json())
        store.update_model_metrics(
            feature, candidate_version, {"gate": {"passed": gate.passed, "reason": gate.reason}}
        )

    summary = summary or version_summary
    details: dict[str, Any] = {
        "champion": {**summary(champion), "gate_scores": gate.champion},
        "candidate": {
            **summary(store.get_model_version(feature, candidate_version)),
            "gate_scores": gate.candidate,
        },
        "comparison": gate.comparison,
        "checks": gate.checks,
        "worst_slices": gate.slice_drops[:5],
        "data": data,
        "run_id": run_id,
    }
    event = decide_candidate(
        store,
        feature,
        champion_version=champion.version,
        candidate_version=candidate_version,
        passed=gate.passed,
        reason=gate.reason,
        actor=actor,
        details=details,
    )
    extra = {} if score_rows is None else {"score_rows": tuple(score_rows)}
    return RetrainResult(
        feature=feature,
        champion_version=champion.version,
        candidate_version=candidate_version,
        decision=event.decision,
        gate=gate,
        data=data,
        run_dir=run_dir,
        audit_id=event.id,
        metric=metric,
        **extra,
    )
