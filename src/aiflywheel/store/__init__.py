"""The store: features, data, runs, model versions, the prediction log, feedback, audit.

SQLite at ``$FLYWHEEL_HOME/flywheel.db`` (WAL mode) by default; Postgres or another
database through ``FLYWHEEL_DB_URL``. The schema is managed by Alembic migrations that
ship inside the package (``aiflywheel/migrations/versions``): opening a store upgrades
it to the newest revision, so a new release never needs a manual step, and
``flywheel db status`` shows the revision. Changing a table means adding a migration
(``alembic revision`` against this metadata), never editing an old one.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from aiflywheel.errors import ConflictError, NotFoundError, StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Feature(Base):
    """An AI feature declared by a recipe."""

    __tablename__ = "features"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    task: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    """A cleaned dataset (content hash) with one split of it (split version)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("feature_id", "content_hash", "split_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    split_version: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One execution of a stage (data check, training, ...) and where its files are."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    run_dir: Mapped[str] = mapped_column(Text)
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id"), nullable=True
    )
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ModelVersion(Base):
    """A trained and evaluated model of a feature: candidate, champion or archived."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("feature_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id"), nullable=True
    )
    model_path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    code_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


MODEL_STATUSES = ("candidate", "champion", "archived", "rejected")
API_KEY_ROLES = ("client", "admin")
REVIEW_STATES = ("pending", "accepted", "rejected")
THUMBS = ("up", "down")
FeedbackOutcome = Literal["created", "updated", "repeated"]


class ApiKey(Base):
    """An API key: only a SHA-256 of its secret is stored; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class PredictionLog(Base):
    """One served prediction: the input after PII redaction, the output, the latency."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A user's answer to a prediction, and its review state (pending/accepted/rejected)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    corrected_label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    thumb: Mapped[str | None] = mapped_column(String(8), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    corrected_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    review_state: Mapped[str] = mapped_column(String(16), default="pending")
    reviewer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ShadowPrediction(Base):
    """A candidate's answer to live traffic, scored in the background next to the champion."""

    __tablename__ = "shadow_predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    agrees: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """A decision about which version serves: who, when, from/to, why, with the figures."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_json(self, feature: str | None = None) -> dict[str, Any]:
        """The event as JSON (the CLI's ``audit --json`` and the API)."""
        out: dict[str, Any] = {"id": self.id}
        if feature is not None:
            out["feature"] = feature
        out.update(
            action=self.action,
            actor=self.actor,
            from_version=self.from_version,
            to_version=self.to_version,
            decision=self.decision,
            reason=self.reason,
            details=self.details,
            created_at=self.created_at.isoformat(timespec="seconds"),
        )
        return out


@dataclass(frozen=True)
class FeedbackItem:
    """A feedback row joined with the prediction it answers (what reviewers look at)."""

    id: int
    prediction_id: str
    feature: str
    version: int
    text: str
    predicted: str
    corrected_label: str | None
    thumb: str | None
    comment: str | None
    review_state: str
    reviewer: str | None
    created_at: datetime
    corrected_answer: str | None = None

    @property
    def label(self) -> str | None:
        """The label this item teaches when accepted: the correction, or the prediction on a
        thumbs up (a thumbs down without a correction teaches nothing)."""
        if self.corrected_label:
            return self.corrected_label
        return self.predicted if self.thumb == "up" else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prediction_id": self.prediction_id,
            "feature": self.feature,
            "version": self.version,
            "text": self.text,
            "predicted": self.predicted,
            "corrected_label": self.corrected_label,
            "thumb": self.thumb,
            "comment": self.comment,
            "corrected_answer": self.corrected_answer,
            "review_state": self.review_state,
            "reviewer": self.reviewer,
            "created_at": self.created_at.isoformat(timespec="seconds"),
        }


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_run_id() -> str:
    """Sortable, readable and unique: 20261125-010203-9f2c1a."""
    return f"{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def code_version() -> str:
    from aiflywheel import __version__

    return f"aiflywheel {__version__}"


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


class Store:
    """Records features, dataset versions and runs. Open with ``Store(url)``."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(
                f"FLYWHEEL_DB_URL {url!r} is not a database URL "
                "(expected e.g. sqlite:///path.db or postgresql://user@host/db)"
            ) from None
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open the store at {url}: {exc.strerror}") from None
            connect_args["timeout"] = 30
        try:
            self.engine: Engine = create_engine(url, connect_args=connect_args)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise StoreError(f"cannot open the store at {_shown_url(url)}: {exc}") from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.upgrade()

    def upgrade(self) -> None:
        """Apply pending schema migrations (idempotent)."""
        from alembic import command

        try:
            with _migration_lock(self.engine), self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(
                        f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                    )
                config = _alembic_config(connection)
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            reason = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
            raise StoreError(f"cannot open the store at {_shown_url(self.url)}: {reason}") from None

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise StoreError(f"store write failed at {_shown_url(self.url)}: {reason}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- features -------------------------------------------------------------------
    def upsert_feature(self, name: str, task: str, description: str, recipe: dict) -> Feature:
        with self.session() as session:
            # Insert-if-absent in one statement: two processes creating the same feature
            # at once must not fail on the unique name.
            dialect = session.get_bind().dialect.name
            if dialect in ("sqlite", "postgresql"):
                module = "sqlite" if dialect == "sqlite" else "postgresql"
                insert = importlib.import_module(f"sqlalchemy.dialects.{module}").insert
                session.execute(
                    insert(Feature)
                    .values(
                        name=name,
                        task=task,
                        description=description,
                        recipe=recipe,
                        created_at=utcnow(),
                        updated_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                )
            feature = session.scalar(select(Feature).where(Feature.name == name))
            if feature is None:
                feature = Feature(name=name, task=task, description=description, recipe=recipe)
                session.add(feature)
            else:
                feature.task, feature.description, feature.recipe = task, description, recipe
                feature.updated_at = utcnow()
            session.flush()
            return feature

    def get_feature(self, name: str) -> Feature | None:
        with self.session() as session:
            return session.scalar(select(Feature).where(Feature.name == name))

    def list_features(self) -> list[Feature]:
        with self.session() as session:
            return list(session.scalars(select(Feature).order_by(Feature.name)))

    # -- dataset versions -----------------------------------------------------------
    def record_dataset_version(
        self,
        feature: str,
        *,
        content_hash: str,
        split_version: str,
        rows: int,
        labels: dict,
        source: str,
        path: str,
    ) -> DatasetVersion:
        """The version row for this content and split, created on first sight."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            existing = session.scalar(
                select(DatasetVersion).where(
                    DatasetVersion.feature_id == feature_id,
                    DatasetVersion.content_hash == content_hash,
                    DatasetVersion.split_version == split_version,
                )
            )
            if existing is not None:
                return existing
            version = DatasetVersion(
                feature_id=feature_id,
                content_hash=content_hash,
                split_version=split_version,
                rows=rows,
                labels=labels,
                source=source,
                path=path,
            )
            session.add(version)
            session.flush()
            return version

    def list_dataset_versions(self, feature: str) -> list[DatasetVersion]:
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = (
                select(DatasetVersion)
                .where(DatasetVersion.feature_id == feature_id)
                .order_by(DatasetVersion.id)
            )
            return list(session.scalars(query))

    # -- runs -----------------------------------------------------------------------
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

    # -- model versions -------------------------------------------------------------
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
        """Make ``version`` the champion and write the audit event, in one transaction."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
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

    # -- API keys -------------------------------------------------------------------
    def create_api_key(self, role: str, name: str = "") -> tuple[str, ApiKey]:
        """A new key ``fwk_<id>_<secret>`` (returned once, stored only as a hash)."""
        if role not in API_KEY_ROLES:
            raise ConflictError(f"role must be one of {', '.join(API_KEY_ROLES)}, got {role!r}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        with self.session() as session:
            row = ApiKey(key_id=key_id, secret_hash=hash_secret(secret), role=role, name=name)
            session.add(row)
            session.flush()
            return f"fwk_{key_id}_{secret}", row

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key matching ``token``, or None (unknown, malformed or revoked)."""
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != "fwk" or not key_id or not secret:
            return None
        with self.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None or row.revoked_at is not None:
            return None
        return row if hmac.compare_digest(row.secret_hash, hash_secret(secret)) else None

    def list_api_keys(self) -> list[ApiKey]:
        with self.session() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))

    def revoke_api_key(self, key_id: str) -> ApiKey:
        key_id = key_id.removeprefix("fwk_").split("_")[0]
        with self.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}; see `flywheel keys list`")
            row.revoked_at = row.revoked_at or utcnow()
            return row

    # -- prediction log ------------------------------------------------------------
    def log_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert served predictions in one transaction.

        Each row: ``id, feature, version, text, label, probabilities, latency_ms,
        created_at``. Feature names are resolved to ids here.
        """
        if not rows:
            return
        with self.session() as session:
            ids = self._feature_ids(session, {row["feature"] for row in rows})
            session.execute(
                insert(PredictionLog),
                [
                    {
                        "id": row["id"],
                        "feature_id": ids[row["feature"]],
                        "version": row["version"],
                        "text": row["text"],
                        "label": row["label"],
                        "probabilities": row["probabilities"],
                        "latency_ms": row["latency_ms"],
                        "created_at": row.get("created_at") or utcnow(),
                    }
                    for row in rows
                ],
            )

    def get_prediction(self, prediction_id: str) -> tuple[PredictionLog, str] | None:
        """A logged prediction and its feature name, or None."""
        with self.session() as session:
            found = session.execute(
                select(PredictionLog, Feature.name)
                .join(Feature, PredictionLog.feature_id == Feature.id)
                .where(PredictionLog.id == prediction_id)
            ).first()
            return None if found is None else (found[0], found[1])

    def count_predictions(self, feature: str | None = None) -> int:
        with self.session() as session:
            query = select(func.count()).select_from(PredictionLog)
            if feature is not None:
                query = query.where(PredictionLog.feature_id == self._feature_id(session, feature))
            return int(session.scalar(query) or 0)

    def log_shadow_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert a candidate's shadow answers (``prediction_id, feature, version, label,
        probabilities, agrees``)."""
        if not rows:
            return
        with self.session() as session:
            ids = self._feature_ids(session, {row["feature"] for row in rows})
            session.execute(
                insert(ShadowPrediction),
                [
                    {
                        "prediction_id": row["prediction_id"],
                        "feature_id": ids[row["feature"]],
                        "version": row["version"],
                        "label": row["label"],
                        "probabilities": row["probabilities"],
                        "agrees": row["agrees"],
                        "created_at": row.get("created_at") or utcnow(),
                    }
                    for row in rows
                ],
            )

    def shadow_agreement(self, feature: str) -> dict[int, dict[str, float]]:
        """Per shadowed version: how many live predictions it scored and the share it agreed."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = (
                select(
                    ShadowPrediction.version,
                    func.count(),
                    func.sum(ShadowPrediction.agrees.cast(Integer)),
                )
                .where(ShadowPrediction.feature_id == feature_id)
                .group_by(ShadowPrediction.version)
            )
            return {
                version: {"scored": n, "agreement": (agreed or 0) / n if n else 0.0}
                for version, n, agreed in session.execute(query)
            }

    # -- feedback ------------------------------------------------------------------
    def add_feedback(
        self,
        prediction_id: str,
        *,
        corrected_label: str | None = None,
        thumb: str | None = None,
        comment: str | None = None,
        corrected_answer: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Feedback, FeedbackOutcome]:
        """Store feedback on a logged prediction; returns (row, outcome).

        ``"created"``: a new pending item. ``"updated"``: a prediction has one correction
        (``corrected_label`` or ``corrected_answer``): a second one replaces the answer of
        the pending item that holds the first (same row, new timestamp); when that item
        was already reviewed, ``ConflictError`` names it. ``"repeated"``: with an
        ``idempotency_key`` seen before, the stored row comes back unchanged when the
        payload is the same (``ConflictError`` when not).
        """
        if thumb is not None and thumb not in THUMBS:
            raise ConflictError(f"thumb must be 'up' or 'down', got {thumb!r}")
        payload = (corrected_label, thumb, comment, corrected_answer)
        with self.session() as session:
            if idempotency_key is not None:
                existing = session.scalar(
                    select(Feedback).where(Feedback.idempotency_key == idempotency_key)
                )
                if existing is not None:
                    stored = (
                        existing.corrected_label,
                        existing.thumb,
                        existing.comment,
                        existing.corrected_answer,
                    )
                    if existing.prediction_id != prediction_id or stored != payload:
                        raise ConflictError(
                            f"idempotency key {idempotency_key!r} was already used for "
                            "different feedback"
                        )
                    return existing, "repeated"
            feature_id = session.scalar(
                select(PredictionLog.feature_id).where(PredictionLog.id == prediction_id)
            )
            if feature_id is None:
                raise NotFoundError(f"no prediction with id {prediction_id!r}")
            if corrected_label is not None or corrected_answer is not None:
                earlier = session.scalar(
                    select(Feedback)
                    .where(
                        Feedback.prediction_id == prediction_id,
                        or_(
                            Feedback.corrected_label.is_not(None),
                            Feedback.corrected_answer.is_not(None),
                        ),
                    )
                    .order_by(Feedback.id.desc())
                    .limit(1)
                )
                if earlier is not None and earlier.review_state != "pending":
                    raise ConflictError(
                        f"prediction {prediction_id!r} already has a correction, feedback "
                        f"{earlier.id}, reviewed ({earlier.review_state}); a new correction "
                        "cannot replace it"
                    )
                if earlier is not None:
                    earlier.corrected_label = corrected_label
                    earlier.thumb = thumb
                    earlier.comment = comment
                    earlier.corrected_answer = corrected_answer
                    earlier.idempotency_key = idempotency_key or earlier.idempotency_key
                    earlier.created_at = utcnow()
                    session.flush()
                    return earlier, "updated"
            row = Feedback(
                prediction_id=prediction_id,
                feature_id=feature_id,
                idempotency_key=idempotency_key,
                corrected_label=corrected_label,
                thumb=thumb,
                comment=comment,
                corrected_answer=corrected_answer,
                review_state="pending",
            )
            session.add(row)
            session.flush()
            return row, "created"

    def list_feedback(
        self,
        feature: str,
        *,
        state: str | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> list[FeedbackItem]:
        """Feedback of ``feature`` with the predictions it answers, oldest first."""
        if state is not None and state not in REVIEW_STATES:
            raise ConflictError(
                f"review state must be one of {', '.join(REVIEW_STATES)}, got {state!r}"
            )
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = (
                select(Feedback, PredictionLog)
                .join(PredictionLog, Feedback.prediction_id == PredictionLog.id)
                .where(Feedback.feature_id == feature_id)
                .order_by(Feedback.id)
            )
            if state is not None:
                query = query.where(Feedback.review_state == state)
            if ids is not None:
                query = query.where(Feedback.id.in_(list(ids)))
            if limit is not None:
                query = query.limit(limit)
            return [
                FeedbackItem(
                    id=fb.id,
                    prediction_id=fb.prediction_id,
                    feature=feature,
                    version=pred.version,
                    text=pred.text,
                    predicted=pred.label,
                    corrected_label=fb.corrected_label,
                    thumb=fb.thumb,
                    comment=fb.comment,
                    review_state=fb.review_state,
                    reviewer=fb.reviewer,
                    created_at=fb.created_at,
                    corrected_answer=fb.corrected_answer,
                )
                for fb, pred in session.execute(query)
            ]

    def review_feedback(
        self,
        feature: str,
        decisions: Sequence[tuple[int, str, str | None]],
        *,
        reviewer: str,
    ) -> int:
        """Apply ``(feedback id, state, corrected label or None to keep)`` decisions at once.

        All or nothing: an unknown id or state changes nothing. Returns how many changed.
        """
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            wanted = {fid for fid, _, _ in decisions}
            known = set(
                session.scalars(
                    select(Feedback.id).where(
                        Feedback.feature_id == feature_id, Feedback.id.in_(list(wanted))
                    )
                )
            )
            missing = sorted(wanted - known)
            if missing:
                shown = ", ".join(map(str, missing[:10]))
                raise NotFoundError(f"feature {feature!r} has no feedback with id(s) {shown}")
            now = utcnow()
            for fid, state, label in decisions:
                if state not in REVIEW_STATES:
                    raise ConflictError(
                        f"review state must be one of {', '.join(REVIEW_STATES)}, got {state!r}"
                    )
                values: dict[str, Any] = {
                    "review_state": state,
                    "reviewer": reviewer,
                    "reviewed_at": now,
                }
                if label is not None:
                    values["corrected_label"] = label
                session.execute(update(Feedback).where(Feedback.id == fid).values(**values))
            return len(decisions)

    def feedback_counts(self, feature: str | None = None) -> dict[str, int]:
        """Feedback rows per review state (all features, or one)."""
        with self.session() as session:
            query = select(Feedback.review_state, func.count()).group_by(Feedback.review_state)
            if feature is not None:
                query = query.where(Feedback.feature_id == self._feature_id(session, feature))
            counts = {state: 0 for state in REVIEW_STATES}
            counts.update({state: int(n) for state, n in session.execute(query)})
            return counts

    def ping(self) -> None:
        """Raise StoreError when the database cannot answer a trivial query."""
        with self.session() as session:
            session.execute(select(1))

    def _version_row(self, session: Session, feature: str, version: int) -> ModelVersion:
        feature_id = self._feature_id(session, feature)
        row = session.scalar(
            select(ModelVersion).where(
                ModelVersion.feature_id == feature_id, ModelVersion.version == version
            )
        )
        if row is None:
            known = session.scalars(
                select(ModelVersion.version).where(ModelVersion.feature_id == feature_id)
            ).all()
            raise NotFoundError(
                f"feature {feature!r} has no version {version}; versions: "
                f"{', '.join(map(str, known)) or 'none'}"
            )
        return row

    @classmethod
    def _feature_ids(cls, session: Session, names: set[str]) -> dict[str, int]:
        return {name: cls._feature_id(session, name) for name in names}

    @staticmethod
    def _feature_id(session: Session, name: str) -> int:
        feature_id = session.scalar(select(Feature.id).where(Feature.name == name))
        if feature_id is None:
            raise NotFoundError(
                f"unknown feature {name!r}; run `flywheel data check` on its recipe first"
            )
        return feature_id


MIGRATION_LOCK_KEY = 0x666C7977  # "flyw": Postgres advisory lock held while migrating


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialize schema upgrades: two processes opening a new store must not both create it.

    SQLite files get an exclusive ``flock`` beside the database; Postgres takes an advisory
    lock inside the migration transaction instead (see ``Store.upgrade``).
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        yield
        return
    import fcntl

    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def open_store() -> Store:
    """The store named by the runtime settings; runs whose process died are marked failed."""
    from aiflywheel.core.runs import recover_stale_runs
    from aiflywheel.settings import get_settings

    settings = get_settings()
    store = Store(settings.store_url)
    recover_stale_runs(store, settings.runs_dir)
    return store
