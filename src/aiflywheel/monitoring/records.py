"""Stored drift reports (table ``drift_reports``, migration 0007): the history a console
charts and ``/metrics`` reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from aiflywheel.store import Base, Feature, Store, utcnow
from aiflywheel.store.redaction import RedactedJSON


class DriftReportRow(Base):
    """One computed drift report of a feature."""

    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    version: Mapped[int] = mapped_column(Integer)
    window_rows: Mapped[int] = mapped_column(Integer)
    reference_rows: Mapped[int] = mapped_column(Integer)
    alarm: Mapped[bool] = mapped_column(Boolean)
    worst_check: Mapped[str | None] = mapped_column(String(100), nullable=True)
    worst_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the checks' details may quote words of live traffic: through the redaction gate
    checks: Mapped[list[dict[str, Any]]] = mapped_column(RedactedJSON)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


def save_report(store: Store, feature: str, **fields: Any) -> DriftReportRow:
    with store.session() as session:
        row = DriftReportRow(feature_id=Store._feature_id(session, feature), **fields)
        session.add(row)
        session.flush()
        return row


def report_history(store: Store, feature: str, limit: int = 200) -> list[DriftReportRow]:
    """The newest ``limit`` reports of ``feature``, oldest first."""
    with store.session() as session:
        feature_id = Store._feature_id(session, feature)
        rows = session.scalars(
            select(DriftReportRow)
            .where(DriftReportRow.feature_id == feature_id)
            .order_by(DriftReportRow.computed_at.desc(), DriftReportRow.id.desc())
            .limit(limit)
        ).all()
    return list(reversed(rows))


def latest_reports(store: Store) -> dict[str, DriftReportRow]:
    """Each feature's newest report, by feature name."""
    with store.session() as session:
        newest = select(func.max(DriftReportRow.id)).group_by(DriftReportRow.feature_id)
        rows = session.execute(
            select(DriftReportRow, Feature.name)
            .join(Feature, Feature.id == DriftReportRow.feature_id)
            .where(DriftReportRow.id.in_(newest))
        ).all()
    return {name: row for row, name in rows}
