"""The store's engine: opening a database, migrating it, sessions, shared lookups."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from aiflywheel.errors import NotFoundError, StoreError
from aiflywheel.store.schema import Feature, ModelVersion

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

log = logging.getLogger("aiflywheel.store")


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


class StoreBase:
    """The engine and session of a store; the table groups add their methods (mixins)."""

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
        # The SQLite file this store writes to and its (device, inode), set once migrated:
        # every session checks that the path still names that file (see _check_file).
        self._file: Path | None = None
        self._file_id: tuple[int, int] | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open the store at {url}: {exc.strerror}") from None
            connect_args["timeout"] = 30
            self._file = Path(parsed.database).absolute()
        try:
            self.engine: Engine = create_engine(url, connect_args=connect_args)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise StoreError(f"cannot open the store at {_shown_url(url)}: {exc}") from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.upgrade()
        if self._file is not None:
            info = self._file.stat()
            self._file_id = (info.st_dev, info.st_ino)

    def upgrade(self) -> None:
        """Apply pending schema migrations (idempotent).

        A database at a revision this code does not know (written by a newer aiflywheel)
        is left as it is: ``StoreError`` names the revision. On SQLite, foreign keys are
        off while migrating (batch migrations copy tables that others refer to) and checked
        before the migration commits.
        """
        try:
            with _migration_lock(self.engine), self.engine.connect() as connection:
                sqlite = connection.dialect.name == "sqlite"
                if sqlite:
                    # pysqlite commits DDL as it goes unless the transaction is ours: BEGIN
                    # by hand, so a failed migration leaves the file as it was.
                    raw = connection.connection.driver_connection
                    level = raw.isolation_level
                    raw.isolation_level = None
                    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                    connection.exec_driver_sql("BEGIN")
                elif connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(
                        f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                    )
                try:
                    self._migrate(connection)
                    connection.commit()
                except BaseException:
                    connection.rollback()
                    raise
                finally:
                    if sqlite:
                        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                        connection.commit()
                        raw.isolation_level = level
        except SQLAlchemyError as exc:
            reason = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
            raise StoreError(f"cannot open the store at {_shown_url(self.url)}: {reason}") from None

    def _migrate(self, connection) -> None:
        """Upgrade to head inside the caller's transaction; refuse an unknown revision."""
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        config = _alembic_config(connection)
        script = ScriptDirectory.from_config(config)
        known = {rev.revision for rev in script.walk_revisions()}
        current = MigrationContext.configure(connection).get_current_heads()
        unknown = [rev for rev in current if rev not in known]
        if unknown:
            raise StoreError(
                f"the store at {_shown_url(self.url)} is at schema revision {unknown[0]!r}, "
                f"newer than this aiflywheel knows (up to {script.get_current_head()}); "
                "upgrade aiflywheel to open it"
            )
        command.upgrade(config, "head")
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
            if broken is not None:
                raise StoreError(
                    f"migrating the store at {_shown_url(self.url)} would break a foreign key "
                    f"of table {broken[0]!r}; the store was left as it was"
                )

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction, committed on leaving; StoreError when the database cannot be used.

        On SQLite the database file is checked before and after: a commit into a file that
        was deleted, moved or replaced while open (its open handles still accept writes)
        raises StoreError instead of returning as if stored.
        """
        self._check_file()
        session = self._sessions()
        try:
            yield session
            session.commit()
            self._check_file()
        except SQLAlchemyError as exc:
            session.rollback()
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise StoreError(f"store write failed at {_shown_url(self.url)}: {reason}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        """Raise StoreError when the database cannot answer a trivial query."""
        with self.session() as session:
            session.execute(select(1))

    def check_writable(self) -> None:
        """Raise StoreError when the store could not take a write now.

        SQLite: the file is still the one opened (not deleted, moved or replaced) and it
        and its folder are writable. Postgres: the server answers and the session is not
        read-only (a standby or ``default_transaction_read_only``).
        """
        with self.session() as session:
            if self.engine.dialect.name == "postgresql":
                if session.execute(text("SHOW transaction_read_only")).scalar() == "on":
                    raise StoreError(f"the store at {_shown_url(self.url)} is read-only")
            else:
                session.execute(select(1))
        if self._file is not None:
            for path in (self._file, self._file.parent):
                if not os.access(path, os.W_OK):
                    raise StoreError(f"the database file {path} is not writable")

    def _check_file(self) -> None:
        """StoreError when the SQLite file at the store's path is gone or another file.

        SQLite keeps writing to an open file after it was deleted, and would create an
        empty database for a new connection: both would lose every write from then on.
        """
        if self._file_id is None:
            return
        try:
            info = self._file.stat()  # type: ignore[union-attr]
        except FileNotFoundError:
            problem = "is gone (deleted or moved away while the store was open)"
        except OSError as exc:
            problem = f"cannot be checked: {exc.strerror}"
        else:
            if (info.st_dev, info.st_ino) == self._file_id:
                return
            problem = "was replaced by another file while the store was open"
        # New connections would open (or create) whatever is at the path now: drop the
        # pooled ones so that, once the file is back, they reopen the right one.
        self.engine.dispose()
        raise StoreError(f"the database file {self._file} {problem}; nothing can be stored")

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

    @staticmethod
    def _lock_feature(session: Session, feature_id: int) -> None:
        """Take the feature's write lock until the transaction ends, before reading what a
        change depends on (e.g. the current champion): concurrent changes of one feature,
        from several processes or replicas, then take turns instead of both acting on the
        same stale read. A no-op write does it on both backends: a row lock on Postgres,
        the database's write lock on SQLite (waiting up to the busy timeout)."""
        session.execute(
            update(Feature).where(Feature.id == feature_id).values(updated_at=Feature.updated_at)
        )

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
