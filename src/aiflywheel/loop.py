"""The loop's decisions: which version serves a feature, and why.

``promote`` and ``rollback`` change the champion and write an audit event in the same
transaction; ``retrain_feature`` (in ``aiflywheel.retrain``) builds a candidate from
accepted feedback and lets the gate decide. Servers pick up a new champion by polling
the store, so every decision here takes effect without a restart.
"""

from __future__ import annotations

from typing import Any

from aiflywheel.errors import ConflictError
from aiflywheel.store import AuditEvent, Store


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

    A version that the promotion gate refused (``metrics["gate"]["passed"]`` false) is
    promoted only with ``force`` and a reason; the audit event records the override.
    The first champion of a feature needs no gate: there is nothing to compare against.
    """
    row = store.get_model_version(feature, version)
    current = store.champion(feature)
    gate: dict[str, Any] | None = row.metrics.get("gate")
    refused = gate is not None and not gate.get("passed", False)
    if refused and not force:
        raise ConflictError(
            f"{feature} v{version} did not pass the promotion gate ({gate.get('reason', '')}); "
            "promote with force and a reason to override"
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
        "to": _version_summary(row),
        "from": _version_summary(current) if current is not None else None,
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
    current, previous = (
        store.rollback_target(feature) if to_version is None else (None, to_version)
    )
    if current is None:
        champion = store.champion(feature)
        if champion is None:
            raise ConflictError(f"feature {feature!r} has no champion to roll back")
        current = champion.version
    target = store.get_model_version(feature, previous)
    if target.version == current:
        raise ConflictError(f"{feature} v{current} is already the champion")
    details = {
        "to": _version_summary(target),
        "from": _version_summary(store.get_model_version(feature, current)),
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


def _version_summary(row) -> dict[str, Any]:
    m = row.metrics
    return {
        "version": row.version,
        "model": f"{row.base_model}/{row.method}",
        "macro_f1": m.get("macro_f1"),
        "accuracy": m.get("accuracy"),
    }
