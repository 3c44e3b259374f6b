"""The audit log: who decided which version serves, when, and why."""

from __future__ import annotations

from sqlalchemy import select

from aiflywheel.store.base import StoreBase
from aiflywheel.store.schema import AuditEvent


class AuditStore(StoreBase):
    def record_audit(
        self,
        feature: str,
        *,
        action: str,
        actor: str,
        decision: str,
        reason: str,
        from_version: int | None = None,
        to_version: int | None = None,
        details: dict | None = None,
    ) -> AuditEvent:
        """An audit event for a decision that changed no champion (e.g. a candidate kept out)."""
        with self.session() as session:
            event = AuditEvent(
                feature_id=self._feature_id(session, feature),
                action=action,
                actor=actor,
                from_version=from_version,
                to_version=to_version,
                decision=decision,
                reason=reason,
                details=details or {},
            )
            session.add(event)
            session.flush()
            return event

    def list_audit(self, feature: str) -> list[AuditEvent]:
        """Every audit event of ``feature``, oldest first."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = (
                select(AuditEvent)
                .where(AuditEvent.feature_id == feature_id)
                .order_by(AuditEvent.id)
            )
            return list(session.scalars(query))
