"""Runs: one execution of a stage and where its files are."""

from __future__ import annotations

import secrets

from sqlalchemy import select, update

from aiflywheel.errors import StoreError
from aiflywheel.store.base import StoreBase
from aiflywheel.store.schema import Feature, Run, utcnow


def new_run_id() -> str:
    """Sortable, readable and unique: 20261125-010203-9f2c1a."""
    return f"{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def code_version() -> str:
    from aiflywheel import __version__

    return f"aiflywheel {__version__}"


class RunsStore(StoreBase):
    def start_run(self, feature: str, kind: str, run_dir: str, run_id: str | None = None) -> Run:
        with self.session() as session:
            run = Run(
                id=run_id or new_run_id(),
                feature_id=self._feature_id(session, feature),
                kind=kind,
                status="running",
                run_dir=run_dir,
                summary={},
                code_version=code_version(),
            )
            session.add(run)
            session.flush()
            return run

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        summary: dict | None = None,
        dataset_version_id: int | None = None,
        error: str | None = None,
    ) -> Run:
        with self.session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise StoreError(f"no run with id {run_id!r}")
            run.status = status
            run.summary = summary or {}
            run.dataset_version_id = dataset_version_id
            run.error = error
            run.finished_at = utcnow()
            return run

    def running_runs(self) -> list[tuple[Run, str]]:
        """Runs recorded as running, each with its feature name."""
        with self.session() as session:
            query = (
                select(Run, Feature.name)
                .join(Feature, Run.feature_id == Feature.id)
                .where(Run.status == "running")
            )
            return [(run, name) for run, name in session.execute(query)]

    def fail_running_run(self, run_id: str, *, error: str) -> bool:
        """Mark ``run_id`` failed if it is still running; whether it was."""
        with self.session() as session:
            changed = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == "running")
                .values(status="failed", error=error, finished_at=utcnow())
            ).rowcount
            return bool(changed)

    def list_runs(self, feature: str | None = None, limit: int = 50) -> list[tuple[Run, str]]:
        """Newest runs first, each with its feature name."""
        with self.session() as session:
            query = select(Run, Feature.name).join(Feature, Run.feature_id == Feature.id)
            if feature is not None:
                query = query.where(Feature.name == feature)
            query = query.order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
            return [(run, name) for run, name in session.execute(query)]
