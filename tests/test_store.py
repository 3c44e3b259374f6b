from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aiflywheel.errors import NotFoundError, StoreError
from aiflywheel.store import Store


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'fw.db'}")


def test_store_migrates_to_head_and_uses_wal(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.revision() == "0006"
    mode = sqlite3.connect(tmp_path / "fw.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    # Opening again is a no-op upgrade.
    assert _store(tmp_path).revision() == "0006"


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


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a database URL"),
        ("postgresql+nosuchdriver://u@localhost/db", "cannot open the store"),
    ],
)
def test_bad_store_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store(url)


def test_unwritable_sqlite_location(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(f"sqlite:///{blocker / 'sub' / 'fw.db'}")


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


def test_a_sqlite_file_deleted_or_moved_while_open_refuses_every_session(tmp_path: Path) -> None:
    store = _store(tmp_path)
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
