"""The store: features, dataset versions and runs, in any SQLAlchemy database.

SQLite at ``$FLYWHEEL_HOME/flywheel.db`` (WAL mode) by default; Postgres or another
database through ``FLYWHEEL_DB_URL``. The schema is managed by Alembic migrations that
ship inside the package (``aiflywheel/migrations/versions``): opening a store upgrades
it to the newest revision, so a new release never needs a manual step, and
``flywheel db status`` shows the revision. Changing a table means adding a migration
(``alembic revision`` against this metadata), never editing an old one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from aiflywheel.errors import StoreError

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
            with self.engine.begin() as connection:
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
                    raise StoreError(
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
                raise StoreError(
                    f"feature {feature!r} has no model versions yet; run `flywheel train` first"
                )
            return newest

    @staticmethod
    def _feature_id(session: Session, name: str) -> int:
        feature_id = session.scalar(select(Feature.id).where(Feature.name == name))
        if feature_id is None:
            raise StoreError(
                f"unknown feature {name!r}; run `flywheel data check` on its recipe first"
            )
        return feature_id


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
    """The store named by the runtime settings."""
    from aiflywheel.settings import get_settings

    return Store(get_settings().store_url)
