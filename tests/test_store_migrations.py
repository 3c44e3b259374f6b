"""Schema migrations on real data: a round-1 database (revision 0004, classification-shaped
prediction and feedback columns) opened by this code keeps every row; a database newer than
the code is refused and left alone."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine

from aiflywheel.errors import StoreError
from aiflywheel.store import Feedback, Store
from aiflywheel.store.base import _alembic_config

WHEN = "2026-11-25 10:00:00.000000"

# What round 1 wrote: (id, feature_id, version, text, label, probabilities, latency_ms)
PREDICTIONS = [
    ("p-cls-1", 1, 1, "where is my parcel", "shipping", {"shipping": 0.9, "refund": 0.1}, 3.5),
    ("p-cls-2", 1, 1, "money back please", "shipping", {"shipping": 0.6, "refund": 0.4}, 2.0),
    ("p-cls-3", 1, 2, "refund me", "refund", {"shipping": 0.2, "refund": 0.8}, 1.25),
    ("p-cls-4", 1, 2, "no feedback on this one", "refund", {"shipping": 0.3, "refund": 0.7}, 1.0),
    ("p-asst-1", 2, 1, "how do I reset my password", "answer", {"confidence": 0.82}, 40.0),
    ("p-asst-2", 2, 1, "I want to talk to a person", "handoff", {"confidence": 0.1}, 12.0),
]
TURNS = {
    "p-asst-1": ("Open Settings, then Security, then Reset password. " * 20, False),
    "p-asst-2": ("Let me hand you to a colleague.", True),
}
# (id, prediction_id, feature_id, idempotency_key, corrected_label, thumb, comment,
#  corrected_answer, review_state, reviewer)
FEEDBACK = [
    (1, "p-cls-1", 1, "k-1", None, "up", None, None, "accepted", "ana"),
    (2, "p-cls-2", 1, None, "refund", "down", "wrong queue", None, "pending", None),
    (3, "p-cls-3", 1, None, None, None, "fine, but slow", None, "rejected", "bo"),
    (
        4,
        "p-asst-1",
        2,
        "k-4",
        None,
        "down",
        None,
        "Use the 'Forgot password' link.",
        "pending",
        None,
    ),
    (5, "p-asst-2", 2, None, None, "up", "good handoff", None, "accepted", "ana"),
]
FEEDBACK_KEYS = ("corrected_label", "thumb", "comment", "corrected_answer")


def _round1_database(path: Path) -> str:
    """A SQLite file at revision 0004 holding predictions and feedback of both kinds, as
    round-1 code wrote them (raw SQL: no ORM of this code involved)."""
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0004")
    engine.dispose()
    db = sqlite3.connect(path)
    recipe = json.dumps({"feature": "x"})
    db.executemany(
        "INSERT INTO features (id, name, task, description, recipe, created_at, updated_at) "
        "VALUES (?, ?, ?, '', ?, ?, ?)",
        [
            (1, "tickets", "text_classification", recipe, WHEN, WHEN),
            (2, "helpdesk", "assistant", recipe, WHEN, WHEN),
        ],
    )
    db.executemany(
        "INSERT INTO predictions (id, feature_id, version, text, label, probabilities, "
        "latency_ms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*row[:5], json.dumps(row[5]), row[6], WHEN) for row in PREDICTIONS],
    )
    db.executemany(
        "INSERT INTO assistant_turns (prediction_id, feature_id, version, session_id, "
        "question, answer, kind, handoff, reason, details, created_at) "
        "VALUES (?, 2, 1, 's1', ?, ?, ?, ?, NULL, '{}', ?)",
        [
            (pid, text, TURNS[pid][0], label, TURNS[pid][1], WHEN)
            for pid, _, _, text, label, _, _ in PREDICTIONS
            if pid in TURNS
        ],
    )
    db.executemany(
        "INSERT INTO feedback (id, prediction_id, feature_id, idempotency_key, corrected_label, "
        "thumb, comment, corrected_answer, review_state, reviewer, reviewed_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        [(*row, WHEN) for row in FEEDBACK],
    )
    db.commit()
    db.close()
    return url


def test_a_round1_database_is_upgraded_and_every_row_reads_back(tmp_path: Path) -> None:
    url = _round1_database(tmp_path / "round1.db")
    store = Store(url)
    assert store.revision() == "0007"
    columns = {
        table: [
            c[1]
            for c in sqlite3.connect(tmp_path / "round1.db").execute(f"PRAGMA table_info({table})")
        ]
        for table in ("predictions", "feedback")
    }
    assert "output" in columns["predictions"] and "label" not in columns["predictions"]
    assert "payload" in columns["feedback"] and "corrected_label" not in columns["feedback"]

    assert store.count_predictions() == len(PREDICTIONS)
    for pid, _, version, text, label, probabilities, latency in PREDICTIONS:
        row, feature = store.get_prediction(pid)
        assert (feature, row.version, row.text, row.label, row.latency_ms) == (
            "tickets" if pid.startswith("p-cls") else "helpdesk",
            version,
            text,
            label,
            latency,
        )
        if pid in TURNS:
            answer, handoff = TURNS[pid]
            assert row.output == {
                "label": label,
                "confidence": probabilities["confidence"],
                "answer": answer[:500],
                "handoff": handoff,
            }
        else:
            assert row.output == {"label": label, "probabilities": probabilities}
            assert row.probabilities == probabilities

    items = store.list_feedback("tickets") + store.list_feedback("helpdesk")
    assert [item.id for item in items] == [row[0] for row in FEEDBACK]
    predictions = {row[0]: row for row in PREDICTIONS}
    for item, row in zip(items, FEEDBACK, strict=True):
        fid, pid, _, _, corrected_label, thumb, comment, corrected_answer, state, reviewer = row
        assert (item.prediction_id, item.review_state, item.reviewer) == (pid, state, reviewer)
        assert (item.corrected_label, item.thumb, item.comment, item.corrected_answer) == (
            corrected_label,
            thumb,
            comment,
            corrected_answer,
        )
        assert item.payload == {
            key: value for key, value in zip(FEEDBACK_KEYS, row[4:8], strict=True) if value
        }
        assert (item.text, item.predicted, item.version) == (
            predictions[pid][3],
            predictions[pid][4],
            predictions[pid][2],
        )
    # What the loop reads from them: a thumbs up teaches the prediction, a correction itself.
    assert [item.label for item in items] == ["shipping", "refund", None, None, "handoff"]
    # The idempotency keys still answer retries.
    _, outcome = store.add_feedback("p-cls-1", thumb="up", idempotency_key="k-1")
    assert outcome == "repeated"
    # And the migrated store takes new rows of the new shape.
    _, outcome = store.add_feedback("p-cls-4", corrected_label="shipping")
    assert outcome == "created"


def test_the_downgrade_puts_the_round1_columns_back(tmp_path: Path) -> None:
    path = tmp_path / "round1.db"
    url = _round1_database(path)
    Store(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0004")
    engine.dispose()
    db = sqlite3.connect(path)
    rows = db.execute(
        "SELECT id, feature_id, version, text, label, probabilities, latency_ms "
        "FROM predictions ORDER BY id"
    ).fetchall()
    assert [(*r[:5], json.loads(r[5]), r[6]) for r in rows] == sorted(PREDICTIONS)
    got = db.execute(
        "SELECT id, prediction_id, feature_id, idempotency_key, corrected_label, thumb, comment, "
        "corrected_answer, review_state, reviewer FROM feedback ORDER BY id"
    ).fetchall()
    assert got == FEEDBACK


def _digest(path: Path) -> str:
    """Schema and rows (the file's bytes change when the store turns on WAL mode)."""
    db = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    finally:
        db.close()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    _round1_database(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE alembic_version SET version_num = '0042'")
    db.commit()
    db.close()
    before = _digest(path)
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:///{path}")
    message = str(caught.value)
    assert "\n" not in message
    assert "schema revision '0042'" in message and "newer than this aiflywheel" in message
    assert _digest(path) == before
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0042",)
    assert "label" in [c[1] for c in db.execute("PRAGMA table_info(predictions)")]


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "round1.db"
    _round1_database(path)
    from aiflywheel.store.base import StoreBase

    real = StoreBase._migrate

    def migrate_then_fail(self, connection) -> None:
        real(self, connection)
        raise StoreError("boom after migrating")

    monkeypatch.setattr(StoreBase, "_migrate", migrate_then_fail)
    with pytest.raises(StoreError, match="boom"):
        Store(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0004",)
    assert "label" in [c[1] for c in db.execute("PRAGMA table_info(predictions)")]
    assert db.execute("SELECT count(*) FROM feedback").fetchone() == (len(FEEDBACK),)


def test_idempotency_scopes_migrate_both_ways(tmp_path: Path) -> None:
    """0006: round-1 keys get the anonymous scope; two keys may share a token; the
    downgrade keeps the token on the oldest row and the unique constraint comes back."""
    path = tmp_path / "round1.db"
    store = Store(_round1_database(path))
    db = sqlite3.connect(path)
    scopes = db.execute(
        "SELECT idempotency_scope FROM feedback WHERE idempotency_key IS NOT NULL"
    ).fetchall()
    assert scopes and {scope for (scope,) in scopes} == {"-"}
    first, _ = store.add_feedback("p-cls-4", thumb="up", idempotency_key="t", idempotency_scope="a")
    second, outcome = store.add_feedback(
        "p-cls-4", thumb="up", idempotency_key="t", idempotency_scope="b"
    )
    assert outcome == "created" and second.id != first.id
    same = Feedback(
        prediction_id="p-cls-4",
        feature_id=first.feature_id,
        idempotency_key="t",
        idempotency_scope="a",
        payload={"thumb": "up"},
    )
    with pytest.raises(StoreError, match="UNIQUE"), store.session() as session:  # one per scope
        session.add(same)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0005")
    engine.dispose()
    keys = dict(db.execute("SELECT id, idempotency_key FROM feedback").fetchall())
    assert keys[first.id] == "t" and keys[second.id] is None
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE feedback SET idempotency_key = 't' WHERE id = ?", (second.id,))
    db.close()
    assert Store(f"sqlite:///{path}").revision() == "0007"
