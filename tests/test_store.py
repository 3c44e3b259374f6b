from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aiflywheel.errors import NotFoundError, StoreError
from aiflywheel.store import Store


def _store(tmp_path: Path) -> Store:
    """The test's store: SQLite under its home, or its fresh Postgres database."""
    from aiflywheel.settings import get_settings

    return Store(get_settings().store_url)


def test_store_migrates_to_head_and_uses_wal(tmp_path: Path, store_backend: str) -> None:
    store = _store(tmp_path)
    assert store.revision() == "0007"
    dialects = {"sqlite": "sqlite", "postgres": "postgresql"}
    assert store.engine.dialect.name == dialects[store_backend]
    if store_backend == "sqlite":
        mode = sqlite3.connect(store.engine.url.database).execute("PRAGMA journal_mode").fetchone()
        assert mode[0] == "wal"
    # Opening again is a no-op upgrade.
    assert _store(tmp_path).revision() == "0007"


def test_features_runs_and_dataset_versions(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.upsert_feature("tickets", "text_classification", "route", {"feature": "tickets"})
    store.upsert_feature("tickets", "text_classification", "route tickets", {"feature": "tickets"})
    assert [f.description for f in store.list_features()] == ["route tickets"]

    first = store.record_dataset_version(
        "tickets",
        content_hash="a" * 64,
        split_version="b" * 64,
        rows=10,
        labels={"x": 5, "y": 5},
        source="t.csv",
        path="/tmp/d.jsonl",
    )
    again = store.record_dataset_version(
        "tickets",
        content_hash="a" * 64,
        split_version="b" * 64,
        rows=10,
        labels={"x": 5, "y": 5},
        source="t.csv",
        path="/tmp/d.jsonl",
    )
    assert again.id == first.id
    assert len(store.list_dataset_versions("tickets")) == 1

    run = store.start_run("tickets", "data_check", "/tmp/run")
    store.finish_run(run.id, status="succeeded", summary={"rows": 10}, dataset_version_id=first.id)
    ((stored, name),) = store.list_runs("tickets")
    assert (stored.status, stored.summary, name) == ("succeeded", {"rows": 10}, "tickets")
    assert stored.finished_at is not None


def test_unknown_feature_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown feature 'ghost'"):
        _store(tmp_path).start_run("ghost", "data_check", "/tmp/x")


@pytest.mark.sqlite_only  # no store of the test's own
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a database URL"),
        ("postgresql+nosuchdriver://u@localhost/db", "cannot open the store"),
        # Nothing listens on port 1: one line, the password hidden.
        ("postgresql+psycopg://u:secret@127.0.0.1:1/db", "cannot open the store at "),
    ],
)
def test_bad_store_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store(url)
    with pytest.raises(StoreError) as caught:
        Store(url)
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.sqlite_only
def test_unwritable_sqlite_location(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(f"sqlite:///{blocker / 'sub' / 'fw.db'}")


@pytest.mark.sqlite_only  # the default SQLite path under a relative home
def test_a_relative_home_is_stored_as_an_absolute_path(tmp_path: Path, monkeypatch) -> None:
    from aiflywheel.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLYWHEEL_HOME", "relative/home")
    settings = get_settings()
    assert settings.home == tmp_path / "relative" / "home"
    assert settings.runs_dir.is_absolute() and str(tmp_path) in settings.store_url


def test_a_retried_prediction_batch_is_stored_once() -> None:
    from aiflywheel.store import open_store

    store = open_store()  # the settings' store: SQLite, or Postgres in the Postgres leg
    store.upsert_feature("f", "text_classification", "", {})
    rows = [
        {"id": f"retry{i}", "feature": "f", "version": 1, "text": "t", "latency_ms": 1.0}
        | {"output": {"label": "a", "probabilities": {"a": 1.0}}}
        for i in range(3)
    ]
    store.log_predictions(rows[:2])
    store.log_predictions(rows)  # a commit that landed but was not confirmed, retried
    assert store.count_predictions("f") == 3


@pytest.mark.sqlite_only  # a SQLite file of the test's own
def test_a_sqlite_file_deleted_or_moved_while_open_refuses_every_session(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    store.upsert_feature("f", "text_classification", "", {})
    store.check_writable()
    moved = tmp_path / "moved.db"
    (tmp_path / "fw.db").rename(moved)
    with pytest.raises(StoreError, match=r"fw\.db is gone \(deleted or moved away"):
        store.ping()  # SQLite itself would still write into the open, moved file
    with pytest.raises(StoreError, match="is gone"):
        store.upsert_feature("g", "text_classification", "", {})
    assert not (tmp_path / "fw.db").exists()  # no empty database created in its place
    moved.rename(tmp_path / "fw.db")
    store.check_writable()  # the same file is back: the store works again
    assert store.get_feature("f") is not None and store.get_feature("g") is None
    (tmp_path / "fw.db").rename(moved)
    (tmp_path / "fw.db").write_bytes(moved.read_bytes())
    with pytest.raises(StoreError, match="was replaced by another file"):
        store.check_writable()


def test_concurrent_promotions_leave_one_champion_and_a_consistent_audit_chain(
    tmp_path: Path,
) -> None:
    """Replicas (or admins) promoting at the same moment: the promotions take turns."""
    import threading

    store = _store(tmp_path)
    store.upsert_feature("tickets", "text_classification", "route", {"feature": "tickets"})
    for _ in range(7):
        store.register_model_version(
            "tickets",
            run_id=None,
            dataset_version_id=None,
            model_path=str(tmp_path / "m"),
            base_model="tfidf",
            method="baseline",
            metrics={},
            recipe={"feature": "tickets"},
        )
    store.change_champion("tickets", 1, action="promote", actor="t", reason="first")
    start = threading.Barrier(6)
    errors: list[Exception] = []

    def promote(version: int) -> None:
        mine = Store(store.url)  # each its own connection pool, like a replica
        start.wait()
        try:
            mine.change_champion("tickets", version, action="promote", actor="t", reason="race")
        except StoreError as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            mine.engine.dispose()

    threads = [threading.Thread(target=promote, args=(v,)) for v in range(2, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    champions = [
        row.version for row, _ in store.list_model_versions("tickets") if row.status == "champion"
    ]
    events = store.list_audit("tickets")
    assert len(champions) == 1 and len(events) == 7
    # Each promotion replaced the champion the one before it made.
    for before, after in zip(events, events[1:], strict=False):
        assert after.from_version == before.to_version
    assert events[-1].to_version == champions[0]
