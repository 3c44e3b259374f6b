"""Nothing raw stored, nothing raw exported: PII sent through every endpoint (classify,
chat completions, handoff tickets, feedback with comments and corrections, staff answers,
knowledge-base entries, the CLI's feedback import) is looked for in every column of every
table of the store and in every file ``flywheel feedback export`` writes.

The values hide the way a hostile user would hide them: bidi marks, zero-width and tag
characters inside numbers and e-mail addresses, full-width digits, dotted, spaced and
dashed phone numbers, a Chinese resident ID, a card number grouped by dots.
"""

from __future__ import annotations

import csv
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import String, Text, select
from sqlalchemy.types import JSON

from aiflywheel.cli import main
from aiflywheel.core.versions import promote
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.store import Base, Store, open_store

sys.path.insert(0, str(Path(__file__).parent))
from test_assistant_serve import KB, build  # noqa: E402
from test_serve import bearer, register_tfidf  # noqa: E402
from tiny_models import build_tiny_bert  # noqa: E402

CLASSIFIER = "tiny-sentiment"
ASSISTANT = "helpdesk"

# (what is sent, the value that must not be stored in any form)
PII = {
    "bidi_phone": ("138\u200e1234\u200e5678", "13812345678"),
    "rlo_phone": ("电话\u202e139\u202d8765\u202c4321", "13987654321"),
    "dotted_phone": ("137.1111.2222", "13711112222"),
    "spaced_phone": ("136 2222 3333", "13622223333"),
    "dashed_cc_phone": ("+86 135-3333-4444", "13533334444"),
    "fullwidth_phone": ("１３４４４４４５５５５", "13444445555"),
    "tag_phone": ("158\U000e00311234\U000e00325678", "15812345678"),
    "cn_id": ("身份证 440305198805123451", "440305198805123451"),
    "zw_email": ("zhang\u200b.san@exa\u2060mple.com", "zhang.san@example.com"),
    "bom_email": ("john\ufeff.doe@mail.example.org", "john.doe@mail.example.org"),
    "dotted_card": ("4111.1111.1111.1111", "4111111111111111"),
}


def said(*names: str) -> str:
    """A sentence carrying the named PII values (zh and en around them)."""
    return "；".join(f"我的信息 {PII[name][0]} please call" for name in names)


def _forms(value: str) -> set[str]:
    """What a cell shows, with format characters dropped, NFKC-folded, and as digits."""
    stripped = "".join(ch for ch in value if unicodedata.category(ch) != "Cf")
    folded = unicodedata.normalize("NFKC", stripped)
    return {value, stripped, folded, "".join(ch for ch in folded if ch.isdigit())}


def raw_hits(text: str, where: str) -> list[str]:
    """``where: name`` for every PII value found in ``text`` (in any of its forms)."""
    forms = _forms(text)
    return [
        f"{where}: {name}" for name, (_, raw) in PII.items() if any(raw in form for form in forms)
    ]


def scan_store(store: Store) -> tuple[list[str], int]:
    """PII found in any column of any table (all tables of the metadata), and how many
    cells were looked at."""
    import aiflywheel.tasks.assistant.records  # noqa: F401  (its tables join the metadata)

    hits: list[str] = []
    cells = 0
    with store.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(select(table)).mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    cells += 1
                    shown = (
                        json.dumps(value, ensure_ascii=False)
                        if isinstance(value, dict | list)
                        else str(value)
                    )
                    hits += raw_hits(shown, f"{table.name}.{column}")
    return hits, cells


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [p.read_text(encoding="utf-8") for p in sorted(KB.rglob("*")) if p.is_file()]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


def test_no_pii_is_stored_or_exported_whatever_the_endpoint(
    tiny_bert: Path, tmp_path: Path, capsys
) -> None:
    store = open_store()
    # The recipe turns the classifier's own redaction off: the store's gate still holds.
    promote(store, CLASSIFIER, register_tfidf(store, tmp_path / "models", pii="off"), actor="t")
    build(tiny_bert, ASSISTANT)
    client_key, _ = store.create_api_key("client", "app")
    admin_key, _ = store.create_api_key("admin", "ops")
    client, admin = bearer(client_key), bearer(admin_key)

    with TestClient(create_app(ServeConfig(), store)) as api:
        one = api.post(
            "/v1/classify",
            json={"feature": CLASSIFIER, "text": "很好 great " + said("bidi_phone", "cn_id")},
            headers=client,
        )
        assert one.status_code == 200, one.text
        batch = api.post(
            "/v1/classify",
            json={
                "feature": CLASSIFIER,
                "texts": [said("dotted_phone", "zw_email"), said("fullwidth_phone", "tag_phone")],
            },
            headers=client,
        )
        assert batch.status_code == 200, batch.text
        pid = one.json()["prediction_id"]
        corrected = api.post(
            "/v1/feedback",
            json={
                "prediction_id": pid,
                "corrected_label": "negative",
                "comment": said("rlo_phone", "spaced_phone", "bom_email"),
                "idempotency_key": "retry-1",
            },
            headers=client,
        )
        assert corrected.status_code == 201, corrected.text
        retried = api.post(
            "/v1/feedback",
            json={
                "prediction_id": pid,
                "corrected_label": "negative",
                "comment": said("rlo_phone", "spaced_phone", "bom_email"),
                "idempotency_key": "retry-1",
            },
            headers=client,
        )
        # The stored (redacted) payload still answers a retry of the raw one.
        assert retried.status_code == 200, retried.text

        chat = {
            "model": ASSISTANT,
            "messages": [
                {
                    "role": "user",
                    "content": "How do I reset my password? "
                    + said("dashed_cc_phone", "dotted_card"),
                }
            ],
            "session_id": "session-" + PII["spaced_phone"][0],
        }
        answer = api.post("/v1/chat/completions", json=chat, headers=client)
        assert answer.status_code == 200, answer.text
        turn = answer.json()["flywheel"]
        handoff = api.post(
            "/v1/chat/completions",
            json={
                "model": ASSISTANT,
                "messages": [{"role": "user", "content": "转人工 " + said("bidi_phone", "cn_id")}],
                "user": "customer " + PII["zw_email"][0],
            },
            headers=client,
        )
        assert handoff.status_code == 200, handoff.text
        ticket_id = handoff.json()["flywheel"]["ticket_id"]
        assert isinstance(ticket_id, int)

        on_answer = api.post(
            "/v1/feedback",
            json={
                "prediction_id": turn["prediction_id"],
                "thumb": "down",
                "corrected_answer": "Call us: " + said("fullwidth_phone", "zw_email"),
                "comment": said("cn_id"),
            },
            headers=client,
        )
        assert on_answer.status_code == 201, on_answer.text
        kb = f"/v1/features/{ASSISTANT}/kb"
        from_feedback = api.post(
            kb, json={"feedback_id": on_answer.json()["feedback_id"]}, headers=admin
        )
        assert from_feedback.status_code == 201, from_feedback.text
        direct = api.post(
            kb,
            json={"question": "Who to call? " + said("tag_phone"), "answer": said("dotted_card")},
            headers=admin,
        )
        assert direct.status_code == 201, direct.text
        staff = api.post(
            f"/v1/features/{ASSISTANT}/tickets/{ticket_id}/answer",
            json={"answer": "We called you at " + said("bidi_phone", "bom_email")},
            headers=admin,
        )
        assert staff.status_code == 201, staff.text

    # New feedback through the CLI: a file with a comment.
    batch_pid = batch.json()["predictions"][0]["prediction_id"]
    incoming = tmp_path / "incoming.jsonl"
    incoming.write_text(
        json.dumps(
            {
                "prediction_id": batch_pid,
                "review_state": "pending",
                "thumb": "down",
                "comment": said("dashed_cc_phone", "cn_id"),
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    assert main(["feedback", "import", CLASSIFIER, str(incoming), "--actor", "ann"]) == 0

    exported: list[Path] = []
    for feature in (CLASSIFIER, ASSISTANT):
        for suffix in ("csv", "jsonl"):
            path = tmp_path / f"{feature}.{suffix}"
            assert main(["feedback", "export", feature, "-o", str(path)]) == 0
            exported.append(path)
    capsys.readouterr()

    hits, cells = scan_store(store)
    assert cells > 100
    for path in exported:
        hits += raw_hits(path.read_text(encoding="utf-8"), path.name)
    assert hits == []
    # Placeholders are what is left, and the texts around them are kept.
    exported_csv = _csv_cells(tmp_path / f"{CLASSIFIER}.csv")
    comments = [row["comment"] for row in exported_csv]
    assert any("<PHONE>" in comment and "please call" in comment for comment in comments)
    assert any("<CN_ID>" in row["text"] for row in exported_csv)


def test_every_text_column_is_gated_or_says_why_not() -> None:
    """A new String/Text/JSON column must pass the gate or be listed in UNGATED."""
    import aiflywheel.monitoring.records  # noqa: F401  (tables defined outside the store)
    import aiflywheel.tasks.assistant.records  # noqa: F401
    from aiflywheel.store.redaction import UNGATED, is_gated

    seen: set[str] = set()
    unclassified: list[str] = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            name = f"{table.name}.{column.name}"
            seen.add(name)
            if not isinstance(column.type, String | Text | JSON) and not is_gated(column.type):
                continue
            if not is_gated(column.type) and name not in UNGATED:
                unclassified.append(name)
            if is_gated(column.type) and name in UNGATED:
                unclassified.append(f"{name} (gated and listed as ungated)")
    assert unclassified == []
    assert sorted(set(UNGATED) - seen) == []


def test_every_write_path_of_the_orm_and_core_is_gated(tmp_path: Path) -> None:
    """ORM objects, Core inserts and updates, and lookups all go through the gate."""
    from sqlalchemy import insert, update

    from aiflywheel.store import PredictionLog
    from aiflywheel.tasks.assistant.records import AssistantTurn

    store = open_store()
    store.upsert_feature("f", "text_classification", "", {})
    raw = said("bidi_phone", "zw_email")
    with store.session() as session:
        feature_id = store._feature_id(session, "f")
        session.execute(
            insert(PredictionLog),
            [{"id": "p1", "feature_id": feature_id, "version": 1, "text": raw,
              "output": {"label": "x", "note": [raw]}, "latency_ms": 1.0}],
        )  # fmt: skip
        session.execute(update(PredictionLog).where(PredictionLog.id == "p1").values(text=raw))
        turn = AssistantTurn(
            prediction_id="p1", feature_id=feature_id, version=1, session_id=PII["cn_id"][0],
            question=raw, answer=raw, kind="faq", handoff=False, reason=None, details={"q": raw},
        )  # fmt: skip
        session.add(turn)
        # In memory as stored: what the write returns is what was stored.
        assert raw_hits(turn.question, "question") == []
    with store.session() as session:
        # A lookup by the raw session id finds the turn stored under the redacted one.
        found = session.scalar(
            select(AssistantTurn).where(AssistantTurn.session_id == PII["cn_id"][0])
        )
        assert found is not None and found.session_id == "身份证 <CN_ID>"
    hits, _ = scan_store(store)
    assert hits == []


def _csv_cells(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_feedback_export_neutralizes_formula_cells_and_import_reads_them_back(
    tmp_path: Path, capsys
) -> None:
    store = open_store()
    promote(store, CLASSIFIER, register_tfidf(store, tmp_path / "models"), actor="t")
    key, _ = store.create_api_key("client", "app")
    formulas = [
        '=HYPERLINK("http://evil.example","click")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "\t=1+1",
        "\r=1+1",
        "'=already quoted",
    ]
    with TestClient(create_app(ServeConfig(), store)) as api:
        ids = []
        for formula in formulas:
            pid = api.post(
                "/v1/classify", json={"text": formula + " great"}, headers=bearer(key)
            ).json()["prediction_id"]
            response = api.post(
                "/v1/feedback",
                json={"prediction_id": pid, "thumb": "down", "comment": formula},
                headers=bearer(key),
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["feedback_id"])
    out = tmp_path / "review.csv"
    assert main(["feedback", "export", CLASSIFIER, "-o", str(out)]) == 0
    rows = _csv_cells(out)
    assert [row["comment"] for row in rows] == ["'" + f for f in formulas]
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(dangerous), (column, cell)

    # A reviewer accepts every row in the spreadsheet; import reads the cells back.
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "review_state": "accepted"} for row in rows)
    assert main(["feedback", "import", CLASSIFIER, str(out), "--actor", "ann"]) == 0
    capsys.readouterr()
    items = store.list_feedback(CLASSIFIER)
    assert [item.id for item in items] == ids
    assert [item.comment for item in items] == formulas
    assert {item.review_state for item in items} == {"accepted"}


def test_spreadsheet_cells_round_trip() -> None:
    from aiflywheel.data.spreadsheet import neutralize_cell, restore_cell

    for value in ["", "plain", "=1", "'=1", "''=1", "'plain", "-", "@", "a=b", "'", "\t", "x\t"]:
        assert restore_cell(neutralize_cell(value)) == value
        assert not neutralize_cell(value).startswith(("=", "+", "-", "@", "\t", "\r"))
