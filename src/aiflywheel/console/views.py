"""What each console page shows, read from the store through the Task contract.

Plain functions from the store (and settings) to dicts the templates render; no task
names: a version's quality comes from its task's ``quality()``, a relabel is checked by
the task's feedback model, gate checks come from the audit log where every gate writes
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select

from aiflywheel.core.registry import get_task
from aiflywheel.core.task import parse_feedback
from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.core.versions import task_of
from aiflywheel.errors import DataError, FlywheelError, NotFoundError
from aiflywheel.store import (
    AuditEvent,
    Feature,
    Feedback,
    FeedbackItem,
    ModelVersion,
    PredictionLog,
    Run,
    Store,
    utcnow,
)

TRAFFIC_HOURS = 24
REPORT_NAMES = ("report.html",)
LOG_SUFFIXES = (".log", ".jsonl", ".json", ".txt")
LOG_TAIL_BYTES = 20_000


def quality_of(row: ModelVersion) -> dict[str, Any]:
    """The version's primary metric with its CI and the baseline, as its task reports it."""
    quality = get_task(task_of(row)).quality(VersionMetrics.of(row))
    return quality.to_json()


def _traffic(store: Store, feature_id: int, since: datetime) -> tuple[int, int]:
    with store.session() as session:
        predictions = session.scalar(
            select(func.count())
            .select_from(PredictionLog)
            .where(PredictionLog.feature_id == feature_id, PredictionLog.created_at >= since)
        )
        feedback = session.scalar(
            select(func.count())
            .select_from(Feedback)
            .where(Feedback.feature_id == feature_id, Feedback.created_at >= since)
        )
    return int(predictions or 0), int(feedback or 0)


def features_overview(store: Store) -> list[dict[str, Any]]:
    """One row per feature: task, champion, candidates, quality, traffic, feedback."""
    since = utcnow() - timedelta(hours=TRAFFIC_HOURS)
    by_feature: dict[str, list[ModelVersion]] = {}
    for row, name in store.list_model_versions():
        by_feature.setdefault(name, []).append(row)
    out = []
    for feature in store.list_features():
        versions = by_feature.get(feature.name, [])
        champion = next((v for v in versions if v.status == "champion"), None)
        candidates = [v.version for v in versions if v.status == "candidate"]
        predictions, feedback = _traffic(store, feature.id, since)
        counts = store.feedback_counts(feature.name)
        out.append(
            {
                "name": feature.name,
                "task": feature.task,
                "champion": champion.version if champion else None,
                "candidates": candidates,
                "versions": len(versions),
                "quality": quality_of(champion) if champion else None,
                "predictions_per_hour": predictions / TRAFFIC_HOURS,
                "predictions_24h": predictions,
                "feedback_24h": feedback,
                "feedback_rate": feedback / predictions if predictions else None,
                "pending": counts.get("pending", 0),
            }
        )
    return out


def feature_names(store: Store) -> list[str]:
    return [f.name for f in store.list_features()]


def require_feature(store: Store, feature: str) -> Feature:
    row = store.get_feature(feature)
    if row is None:
        known = ", ".join(feature_names(store)) or "none yet"
        raise NotFoundError(f"unknown feature {feature!r} (features: {known})")
    return row


def _report_path(store: Store, row: ModelVersion) -> Path | None:
    places = [Path(row.model_path).parent]
    if row.run_id:
        with store.session() as session:
            run = session.get(Run, row.run_id)
        if run is not None:
            places.append(Path(run.run_dir))
    for place in places:
        for name in REPORT_NAMES:
            if (place / name).is_file():
                return place / name
    return None


def version_detail(store: Store, feature: str, version: int) -> dict[str, Any]:
    """A version: quality, gate checks (from its audit events), variants, report."""
    row = store.get_model_version(feature, version)
    champion = store.champion(feature)
    events = store.list_audit(feature)
    gate_events = [
        e for e in events if e.to_version == version and isinstance(e.details.get("checks"), list)
    ]
    checks = gate_events[-1].details["checks"] if gate_events else []
    variants = [
        {
            "name": e.details.get("variant", ""),
            "version": e.to_version,
            "decision": e.decision,
            "reason": e.reason,
        }
        for e in events
        if e.action == "compress" and e.from_version == version
    ]
    figures = VersionMetrics.of(row)
    extra = {
        k: v for k, v in figures.extra.items() if isinstance(v, (int, float)) and v is not None
    }
    return {
        "feature": feature,
        "version": row.version,
        "status": row.status,
        "model": f"{row.base_model}/{row.method}",
        "created_at": row.created_at,
        "quality": quality_of(row),
        "verdict": figures.verdict,
        "gate": figures.gate.model_dump() if figures.gate is not None else None,
        "checks": checks,
        "variants": variants,
        "figures": extra,
        "champion": champion.version if champion else None,
        "report": _report_path(store, row) is not None,
        "history": [e for e in events if version in (e.to_version, e.from_version)],
    }


def version_report(store: Store, feature: str, version: int) -> Path:
    row = store.get_model_version(feature, version)
    path = _report_path(store, row)
    if path is None:
        raise NotFoundError(f"{feature} v{version} has no evaluation report on this machine")
    return path


def feature_versions(store: Store, feature: str) -> list[dict[str, Any]]:
    return [
        {"version": row.version, "status": row.status, "quality": quality_of(row)}
        for row, _ in store.list_model_versions(feature)
    ]


# -- review -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewFilter:
    """Which feedback the queue shows (and a bulk action changes)."""

    state: str = "pending"
    predicted: str = ""
    corrected: str = ""
    version: int | None = None

    def matches(self, item: FeedbackItem) -> bool:
        if self.predicted and item.predicted != self.predicted:
            return False
        if self.corrected and (item.corrected_label or "") != self.corrected:
            return False
        return self.version is None or item.version == self.version

    @property
    def narrows(self) -> bool:
        """Whether it filters on more than the review state."""
        return bool(self.predicted or self.corrected or self.version is not None)


def review_items(store: Store, feature: str, where: ReviewFilter) -> list[FeedbackItem]:
    """Every item the filter matches, oldest first (what a bulk action changes)."""
    state = where.state or None
    return [i for i in store.list_feedback(feature, state=state) if where.matches(i)]


def review_page(
    store: Store, feature: str, where: ReviewFilter, shown: int
) -> tuple[list[FeedbackItem], int]:
    """The first ``shown`` items the filter matches and how many match in all (a filter on
    the state alone reads only the rows shown)."""
    if where.narrows:
        items = review_items(store, feature, where)
        return items[:shown], len(items)
    counts = store.feedback_counts(feature)
    total = counts.get(where.state, 0) if where.state else sum(counts.values())
    return store.list_feedback(feature, state=where.state or None, limit=shown), total


def check_relabel(store: Store, feature: str, item: FeedbackItem, label: str) -> str:
    """``label`` if the feature's task accepts it as a correction of ``item``'s prediction;
    else ``DataError`` with the task's message (a classifier names its labels)."""
    label = label.strip()
    row = require_feature(store, feature)
    task = get_task(row.task)
    try:
        parse_feedback(task, {"corrected_label": label}, item.output, feature=feature)
    except ValidationError as exc:
        problems = task.feedback_payload.problems(exc)
        first = problems[0] if problems else {"msg": str(exc)}
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        raise DataError(f"relabel feedback {item.id} to {label!r}: {message}") from None
    return label


def decide_feedback(
    store: Store,
    feature: str,
    ids: list[int],
    action: str,
    *,
    label: str | None,
    reviewer: str,
) -> int:
    """Accept, reject or relabel (accept with a corrected label) feedback items at once."""
    if action not in ("accept", "reject", "relabel"):
        raise DataError(f"action must be accept, reject or relabel, got {action!r}")
    if not ids:
        raise DataError("no feedback selected: nothing matches the filter")
    items = {i.id: i for i in store.list_feedback(feature, ids=ids)}
    missing = sorted(set(ids) - set(items))
    if missing:
        raise NotFoundError(
            f"feature {feature!r} has no feedback with id(s) {', '.join(map(str, missing[:10]))}"
        )
    new_label = None
    if action == "relabel":
        if not label or not label.strip():
            raise DataError("relabel needs a label")
        for item in items.values():
            new_label = check_relabel(store, feature, item, label)
    state = "rejected" if action == "reject" else "accepted"
    return store.review_feedback(
        feature, [(fid, state, new_label) for fid in ids], reviewer=reviewer
    )


HANDOFFS_SHOWN = 50


def handoffs(store: Store, feature: str) -> list[Any]:
    """The newest questions ``feature`` handed to a person that nobody answered yet (empty
    for tasks that never hand off), for reviewers to answer into the review queue."""
    row = require_feature(store, feature)
    found = [h for h in get_task(row.task).handoff_questions(feature, store=store) if h.open]
    return sorted(found, key=lambda h: h.ref, reverse=True)[:HANDOFFS_SHOWN]


def answer_handoff(store: Store, feature: str, ref: int, answer: str, *, actor: str) -> dict:
    """A reviewer's answer to a handoff: pending feedback in the same review queue."""
    answer = (answer or "").strip()
    if not answer:
        raise DataError(
            f"handoff {ref}: the answer is empty; give the text the customer should get"
        )
    row = require_feature(store, feature)
    return get_task(row.task).send_draft(feature, ref, answer, store=store, actor=actor)


def int_field(value: Any, field: str) -> int:
    """A whole number from a form or path field; else ``DataError`` naming the field."""
    text = str(value or "").strip()
    if not text.lstrip("-").isdigit():
        raise DataError(f"{field} must be a whole number, got {text!r}")
    return int(text)


def label_choices(items: list[FeedbackItem]) -> list[str]:
    """Labels seen in the queue's predictions (for the relabel picker)."""
    seen: set[str] = set()
    for item in items:
        seen.update(str(k) for k in (item.output.get("probabilities") or {}))
    return sorted(seen)


# -- audit and runs -----------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    feature: str = ""
    action: str = ""
    actor: str = ""
    decision: str = ""


def audit_timeline(store: Store, where: AuditFilter, limit: int = 500) -> list[dict[str, Any]]:
    """Audit events of every feature (or one), newest first, filtered."""
    with store.session() as session:
        query = select(AuditEvent, Feature.name).join(Feature, AuditEvent.feature_id == Feature.id)
        if where.feature:
            query = query.where(Feature.name == where.feature)
        if where.action:
            query = query.where(AuditEvent.action == where.action)
        if where.decision:
            query = query.where(AuditEvent.decision == where.decision)
        if where.actor:
            query = query.where(AuditEvent.actor.contains(where.actor))
        query = query.order_by(AuditEvent.id.desc()).limit(limit)
        return [event.to_json(name) for event, name in session.execute(query)]


def audit_choices(store: Store) -> dict[str, list[str]]:
    with store.session() as session:
        actions = sorted(session.scalars(select(AuditEvent.action).distinct()))
        decisions = sorted(session.scalars(select(AuditEvent.decision).distinct()))
    return {"actions": actions, "decisions": decisions}


def run_detail(store: Store, run_id: str) -> dict[str, Any]:
    """A run and the tail of each log file in its folder."""
    with store.session() as session:
        found = session.execute(
            select(Run, Feature.name)
            .join(Feature, Run.feature_id == Feature.id)
            .where(Run.id == run_id)
        ).first()
    if found is None:
        raise NotFoundError(f"no run {run_id!r}")
    run, feature = found
    logs = []
    folder = Path(run.run_dir)
    for candidate in (folder, folder.with_name(folder.name + ".partial")):
        if not candidate.is_dir():
            continue
        for path in sorted(candidate.iterdir()):
            if path.is_file() and path.suffix in LOG_SUFFIXES and "log" in path.name:
                size = path.stat().st_size
                with path.open("rb") as handle:
                    handle.seek(max(0, size - LOG_TAIL_BYTES))
                    tail = handle.read().decode("utf-8", errors="replace")
                logs.append({"name": path.name, "size": size, "tail": tail})
        break
    return {"run": run, "feature": feature, "logs": logs, "exists": folder.is_dir()}


def figure(value: Any, digits: int = 3) -> str:
    """A number for a table cell ("–" when missing)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def describe_error(exc: FlywheelError) -> str:
    return " ".join(str(exc).split())
