"""The console on an assistant feature, through the same Task contract: a handoff ticket
answered in the review queue becomes pending feedback in that queue, a gap's edited FAQ
draft goes there too, and the insights page lists the handed-off question."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent.parent))
from aiflywheel.core.versions import promote  # noqa: E402
from aiflywheel.serve.app import create_app  # noqa: E402
from aiflywheel.serve.config import ServeConfig  # noqa: E402
from aiflywheel.store import open_store  # noqa: E402
from test_assistant_serve import build  # noqa: E402
from tiny_models import build_tiny_bert  # noqa: E402

KB = Path(__file__).parent.parent / "fixtures" / "assistant" / "kb"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def tiny_bert(tmp_path: Path) -> Path:
    texts = [p.read_text(encoding="utf-8") for p in sorted(KB.rglob("*")) if p.is_file()]
    return build_tiny_bert(tmp_path / "tiny-bert", texts)


def test_handoffs_are_answered_into_the_review_queue(tiny_bert: Path) -> None:
    store = open_store()
    version = build(tiny_bert)
    if store.champion("helpdesk") is None:
        promote(store, "helpdesk", version, actor="setup", reason="first")
    client_key, _ = store.create_api_key("client", "shop")
    reviewer, _ = store.create_api_key("reviewer", "rita")
    viewer, _ = store.create_api_key("viewer", "vic")
    with TestClient(create_app(ServeConfig(), store), base_url="http://testserver") as api:
        asked = api.post(
            "/v1/chat/completions",
            json={"model": "helpdesk", "messages": [{"role": "user", "content": "转人工"}]},
            headers={"Authorization": f"Bearer {client_key}"},
        )
        ticket = asked.json()["flywheel"]["ticket_id"]

        def sign_in(key: str) -> str:
            token = CSRF.search(api.get("/console/login").text).group(1)
            api.post("/console/login", data={"key": key, "csrf": token})
            return CSRF.search(api.get("/console/review?feature=helpdesk").text).group(1)

        token = sign_in(viewer)
        page = api.get("/console/review?feature=helpdesk")
        assert f'data-ref="{ticket}"' in page.text and "转人工" in page.text
        refused = api.post(
            "/console/review/answer",
            data={"feature": "helpdesk", "ref": ticket, "answer": "x", "csrf": token},
        )
        assert refused.status_code == 403
        assert store.list_feedback("helpdesk") == []
        token = sign_in(reviewer)
        empty = api.post(
            "/console/review/answer",
            data={"feature": "helpdesk", "ref": ticket, "answer": " ", "csrf": token},
        )
        assert empty.status_code == 422 and "answer is empty" in html.unescape(empty.text)
        done = api.post(
            "/console/review/answer",
            data={"feature": "helpdesk", "ref": ticket, "csrf": token,
                  "answer": "A colleague will call you back within one working day.",
                  "next": "/console/review?feature=helpdesk"},
            follow_redirects=False,
        )
        assert done.status_code == 303 and "note=answered" in done.headers["location"]
        [item] = store.list_feedback("helpdesk")
        assert item.review_state == "pending"
        assert item.corrected_answer.startswith("A colleague will call you back")
        queue = api.get("/console/review?feature=helpdesk")
        assert f'data-id="{item.id}"' in queue.text and "A colleague will call" in queue.text
        assert f'data-ref="{ticket}"' not in queue.text  # answered: no longer listed
        # Accepting it in the queue is the same review as any feedback.
        api.post(
            "/console/review/decide",
            data={"feature": "helpdesk", "id": item.id, "action": "accept", "csrf": token},
        )
        assert store.list_feedback("helpdesk")[0].review_state == "accepted"
        # A relabel makes no sense for an assistant: the task's own message says so.
        relabel = api.post(
            "/console/review/decide",
            data={"feature": "helpdesk", "id": item.id, "action": "relabel",
                  "label": "x", "csrf": token},
        )
        assert relabel.status_code == 422
        insights = api.get("/console/insights?feature=helpdesk&embedder=tfidf")
        assert insights.status_code == 200, insights.text[-500:]
        # An edited FAQ draft for another handoff goes to the same queue, pending.
        other = api.post(
            "/v1/chat/completions",
            json={"model": "helpdesk",
                  "messages": [{"role": "user", "content": "I want to talk to a human"}]},
            headers={"Authorization": f"Bearer {client_key}"},
        ).json()["flywheel"]["ticket_id"]
        sent = api.post(
            "/console/insights/send",
            data={"feature": "helpdesk", "ticket_id": other, "csrf": token,
                  "answer": "Use the contact form under Help; a person answers within a day."},
            follow_redirects=False,
        )
        assert sent.status_code == 303 and "note=sent" in sent.headers["location"]
        pending = store.list_feedback("helpdesk", state="pending")
        assert [i.corrected_answer for i in pending] == [
            "Use the contact form under Help; a person answers within a day."
        ]
        # The first ticket's answer was reviewed: answering it again says so, changes nothing.
        again = api.post(
            "/console/insights/send",
            data={"feature": "helpdesk", "ticket_id": ticket, "csrf": token, "answer": "new"},
        )
        assert again.status_code == 409 and "reviewed" in html.unescape(again.text)
        assert len(store.list_feedback("helpdesk")) == 2
