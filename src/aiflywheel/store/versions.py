"""Model versions: register, list, status, metrics, champion changes."""

from __future__ import annotations

from sqlalchemy import select

from aiflywheel.errors import ConflictError, NotFoundError
from aiflywheel.store.base import StoreBase
from aiflywheel.store.runs import code_version
from aiflywheel.store.schema import MODEL_STATUSES, AuditEvent, Feature, ModelVersion


class VersionsStore(StoreBase):
    def register_model_version(
        self,
        feature: str,
        *,
        run_id: str | None,
        dataset_version_id: int | None,
        model_path: str,
        base_model: str,
        method: str,
        metrics: dict,
        recipe: dict,
        status: str = "candidate",
    ) -> ModelVersion:
        """Add the next version number of ``feature`` (1, 2, ...)."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            latest = session.scalar(
                select(ModelVersion.version)
                .where(ModelVersion.feature_id == feature_id)
                .order_by(ModelVersion.version.desc())
                .limit(1)
            )
            version = ModelVersion(
                feature_id=feature_id,
                version=(latest or 0) + 1,
                status=status,
                run_id=run_id,
                dataset_version_id=dataset_version_id,
                model_path=model_path,
                base_model=base_model,
                method=method,
                metrics=metrics,
                recipe=recipe,
                code_version=code_version(),
            )
            session.add(version)
            session.flush()
            return version

    def list_model_versions(self, feature: str | None = None) -> list[tuple[ModelVersion, str]]:
        """Model versions with their feature names, by feature then version."""
        with self.session() as session:
            query = select(ModelVersion, Feature.name).join(
                Feature, ModelVersion.feature_id == Feature.id
            )
            if feature is not None:
                self._feature_id(session, feature)
                query = query.where(Feature.name == feature)
            query = query.order_by(Feature.name, ModelVersion.version)
            return [(version, name) for version, name in session.execute(query)]

    def get_model_version(self, feature: str, version: int | None = None) -> ModelVersion:
        """A version by number; without one, the champion, else the newest candidate."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = select(ModelVersion).where(ModelVersion.feature_id == feature_id)
            if version is not None:
                found = session.scalar(query.where(ModelVersion.version == version))
                if found is None:
                    known = session.scalars(query.with_only_columns(ModelVersion.version)).all()
                    raise NotFoundError(
                        f"feature {feature!r} has no version {version}; versions: "
                        f"{', '.join(map(str, known)) or 'none'}"
                    )
                return found
            champion = session.scalar(query.where(ModelVersion.status == "champion"))
            if champion is not None:
                return champion
            newest = session.scalar(
                query.where(ModelVersion.status == "candidate")
                .order_by(ModelVersion.version.desc())
                .limit(1)
            )
            if newest is None:
                raise NotFoundError(
                    f"feature {feature!r} has no model versions yet; run `flywheel train` first"
                )
            return newest

    def champion(self, feature: str) -> ModelVersion | None:
        """The version serving ``feature`` now, or None before the first promotion."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            return session.scalar(
                select(ModelVersion).where(
                    ModelVersion.feature_id == feature_id, ModelVersion.status == "champion"
                )
            )

    def champion_versions(self) -> dict[str, int]:
        """``{feature: champion version}`` for every feature with a champion (one query)."""
        with self.session() as session:
            query = (
                select(Feature.name, ModelVersion.version)
                .join(Feature, ModelVersion.feature_id == Feature.id)
                .where(ModelVersion.status == "champion")
            )
            return {name: version for name, version in session.execute(query)}

    def set_model_status(self, feature: str, version: int, status: str) -> ModelVersion:
        """Mark a non-serving version candidate, archived or rejected (promotion has its own)."""
        if status not in MODEL_STATUSES or status == "champion":
            raise ConflictError(
                f"status must be one of candidate, archived, rejected (use promote for "
                f"champion), got {status!r}"
            )
        with self.session() as session:
            row = self._version_row(session, feature, version)
            if row.status == "champion":
                raise ConflictError(
                    f"{feature} v{version} is the champion; promote another version or roll back"
                )
            row.status = status
            return row

    def update_model_metrics(self, feature: str, version: int, metrics: dict) -> ModelVersion:
        """Merge ``metrics`` into a version's stored figures (e.g. its gate result)."""
        with self.session() as session:
            row = self._version_row(session, feature, version)
            row.metrics = {**row.metrics, **metrics}
            return row

    def change_champion(
        self,
        feature: str,
        version: int,
        *,
        action: str,
        actor: str,
        reason: str,
        details: dict | None = None,
        old_status: str = "archived",
    ) -> AuditEvent:
        """Make ``version`` the champion and write the audit event, in one transaction
        that holds the feature's lock (concurrent promotions take turns)."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            self._lock_feature(session, feature_id)
            row = self._version_row(session, feature, version)
            current = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.feature_id == feature_id, ModelVersion.status == "champion"
                )
            )
            if current is not None and current.version == version:
                raise ConflictError(f"{feature} v{version} is already the champion")
            if current is not None:
                current.status = old_status
                session.flush()
            row.status = "champion"
            event = AuditEvent(
                feature_id=feature_id,
                action=action,
                actor=actor,
                from_version=current.version if current is not None else None,
                to_version=version,
                decision="promoted" if action != "rollback" else "rolled back",
                reason=reason,
                details=details or {},
            )
            session.add(event)
            session.flush()
            return event

    def rollback_target(self, feature: str) -> tuple[int, int]:
        """(current champion, the champion it replaced) for ``flywheel rollback``."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            current = session.scalar(
                select(ModelVersion.version).where(
                    ModelVersion.feature_id == feature_id, ModelVersion.status == "champion"
                )
            )
            if current is None:
                raise ConflictError(f"feature {feature!r} has no champion to roll back")
            promoted = session.scalar(
                select(AuditEvent)
                .where(
                    AuditEvent.feature_id == feature_id,
                    AuditEvent.to_version == current,
                    AuditEvent.action != "rollback",
                    AuditEvent.decision == "promoted",
                )
                .order_by(AuditEvent.id.desc())
                .limit(1)
            )
            if promoted is None or promoted.from_version is None:
                raise ConflictError(
                    f"{feature} v{current} was the first champion; there is no earlier "
                    "version to roll back to"
                )
            return current, promoted.from_version
