"""Schema migrations on real data: a round-1 database (revision 0004, classification-shaped
prediction and feedback columns) opened by this code keeps every row; a database newer than
the code is refused and left alone. Each runs on SQLite and on an empty Postgres database."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError

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


@pytest.fixture
def empty_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database: a SQLite file, or a fresh Postgres database (not the migrated
    template the other tests copy)."""
    if store_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'round1.db'}"
    server = request.getfixturevalue("postgres_server")
    url = server.new_database(empty=True)
    request.addfinalizer(lambda: server.drop_database(url))
    return url


def _execute(url: str, sql: str, rows: list[dict] | None = None) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            statement = sql_text(sql)
            result = connection.execute(statement, rows) if rows else connection.execute(statement)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        return [column["name"] for column in inspect(engine).get_columns(table)]
    finally:
        engine.dispose()


def _round1_database(url: str) -> str:
    """The database at ``url`` at revision 0004 holding predictions and feedback of both
    kinds, as round-1 code wrote them (plain SQL: no ORM of this code involved)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0004")
    engine.dispose()
    common = {"recipe": json.dumps({"feature": "x"}), "at": WHEN}
    _execute(
        url,
        "INSERT INTO features (id, name, task, description, recipe, created_at, updated_at) "
        "VALUES (:id, :name, :task, '', :recipe, :at, :at)",
        [
            {"id": 1, "name": "tickets", "task": "text_classification"} | common,
            {"id": 2, "name": "helpdesk", "task": "assistant"} | common,
        ],
    )
    _execute(
        url,
        "INSERT INTO predictions (id, feature_id, version, text, label, probabilities, "
        "latency_ms, created_at) VALUES (:id, :f, :v, :text, :label, :p, :ms, :at)",
        [
            dict(zip(("id", "f", "v", "text", "label"), row[:5], strict=True))
            | {"p": json.dumps(row[5]), "ms": row[6], "at": WHEN}
            for row in PREDICTIONS
        ],
    )
    _execute(
        url,
        "INSERT INTO assistant_turns (prediction_id, feature_id, version, session_id, "
        "question, answer, kind, handoff, reason, details, created_at) "
        "VALUES (:pid, 2, 1, 's1', :q, :a, :kind, :handoff, NULL, '{}', :at)",
        [
            {"pid": pid, "q": question, "a": TURNS[pid][0], "kind": label}
            | {"handoff": TURNS[pid][1], "at": WHEN}
            for pid, _, _, question, label, _, _ in PREDICTIONS
            if pid in TURNS
        ],
    )
    _execute(
        url,
        "INSERT INTO feedback (id, prediction_id, feature_id, idempotency_key, corrected_label, "
        "thumb, comment, corrected_answer, review_state, reviewer, reviewed_at, created_at) "
        "VALUES (:id, :pid, :f, :key, :label, :thumb, :comment, :answer, :state, :reviewer, "
        "NULL, :at)",
        [
            dict(
                zip(
                    ("id", "pid", "f", "key", "label", "thumb", "comment", "answer", "state"),
                    row[:9],
                    strict=True,
                )
            )
            | {"reviewer": row[9], "at": WHEN}
            for row in FEEDBACK
        ],
    )
    if url.startswith("postgresql"):
        # Round 1 took its ids from the sequences: move them past the rows written by hand.
        for table in ("features", "feedback"):
            _execute(
                url,
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))",
            )
    return url


def test_a_round1_database_is_upgraded_and_every_row_reads_back(empty_url: str) -> None:
    url = _round1_database(empty_url)
    store = Store(url)
    assert store.revision() == "0007"
    columns = {table: _columns(url, table) for table in ("predictions", "feedback")}
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


def test_the_downgrade_puts_the_round1_columns_back(empty_url: str) -> None:
    url = _round1_database(empty_url)
    Store(url).engine.dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0004")
    engine.dispose()
    rows = _execute(
        url,
        "SELECT id, feature_id, version, text, label, probabilities, latency_ms "
        "FROM predictions ORDER BY id",
    )
    # SQLite gives the JSON column back as text, Postgres as the decoded value.
    decoded = [(*r[:5], json.loads(r[5]) if isinstance(r[5], str) else r[5], r[6]) for r in rows]
    assert decoded == sorted(PREDICTIONS)
    got = _execute(
        url,
        "SELECT id, prediction_id, feature_id, idempotency_key, corrected_label, thumb, comment, "
        "corrected_answer, review_state, reviewer FROM feedback ORDER BY id",
    )
    assert got == FEEDBACK


def _digest(url: str) -> str:
    """Schema (tables, columns, types) and every row, on either backend."""
    engine = create_engine(url)
    parts: list[str] = []
    try:
        inspector = inspect(engine)
        with engine.connect() as connection:
            for table in sorted(inspector.get_table_names()):
                columns = inspector.get_columns(table)
                parts.append(f"{table}: {[(c['name'], str(c['type'])) for c in columns]}")
                rows = connection.execute(sql_text(f"SELECT * FROM {table}"))
                parts.extend(sorted(repr(tuple(row)) for row in rows))
    finally:
        engine.dispose()
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(empty_url: str) -> None:
    url = _round1_database(empty_url)
    _execute(url, "UPDATE alembic_version SET version_num = '0042'")
    before = _digest(url)
    with pytest.raises(StoreError) as caught:
        Store(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "schema revision '0042'" in message and "newer than this aiflywheel" in message
    assert _digest(url) == before
    assert _execute(url, "SELECT version_num FROM alembic_version") == [("0042",)]
    assert "label" in _columns(url, "predictions")


def test_a_failing_migration_leaves_the_database_as_it_was(empty_url: str, monkeypatch) -> None:
    url = _round1_database(empty_url)
    from aiflywheel.store.base import StoreBase

    real = StoreBase._migrate

    def migrate_then_fail(self, connection) -> None:
        real(self, connection)
        raise StoreError("boom after migrating")

    monkeypatch.setattr(StoreBase, "_migrate", migrate_then_fail)
    with pytest.raises(StoreError, match="boom"):
        Store(url)
    assert _execute(url, "SELECT version_num FROM alembic_version") == [("0004",)]
    assert "label" in _columns(url, "predictions")
    assert _execute(url, "SELECT count(*) FROM feedback") == [(len(FEEDBACK),)]


def test_idempotency_scopes_migrate_both_ways(empty_url: str) -> None:
    """0006: round-1 keys get the anonymous scope; two keys may share a token; the
    downgrade keeps the token on the oldest row and the unique constraint comes back."""
    url = _round1_database(empty_url)
    store = Store(url)
    scopes = _execute(
        url, "SELECT idempotency_scope FROM feedback WHERE idempotency_key IS NOT NULL"
    )
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
    # One row per (scope, key): SQLite says UNIQUE, Postgres "unique constraint".
    with pytest.raises(StoreError, match="(?i)unique"), store.session() as session:
        session.add(same)
    store.engine.dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0005")
    engine.dispose()
    keys = dict(_execute(url, "SELECT id, idempotency_key FROM feedback"))
    assert keys[first.id] == "t" and keys[second.id] is None
    with pytest.raises(IntegrityError):
        _execute(url, f"UPDATE feedback SET idempotency_key = 't' WHERE id = {second.id}")
    assert Store(url).revision() == "0007"
