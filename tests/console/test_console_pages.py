"""The console over TestClient: sign-in, session cookie, CSRF, roles, languages, review
(one by one, in bulk, relabel errors), promote / rollback, audit, runs, keys."""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))
from console_world import World, build_world  # noqa: E402

from aiflywheel.console.i18n import EN, ZH  # noqa: E402
from aiflywheel.serve.app import create_app  # noqa: E402
from aiflywheel.serve.config import ServeConfig  # noqa: E402
from aiflywheel.store import Store, open_store  # noqa: E402

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def world(tmp_path: Path) -> tuple[Store, World]:
    store = open_store()
    return store, build_world(store, tmp_path / "models")


@pytest.fixture
def client(world: tuple[Store, World]) -> Iterator[TestClient]:
    store, _ = world
    with TestClient(create_app(ServeConfig(), store), base_url="http://testserver") as c:
        yield c


def csrf_of(client: TestClient, path: str = "/console/login") -> str:
    page = client.get(path)
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


def sign_in(client: TestClient, key: str) -> None:
    token = csrf_of(client)
    answer = client.post(
        "/console/login", data={"key": key, "csrf": token, "next": "/console"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def test_every_page_string_exists_in_both_languages() -> None:
    assert set(EN) == set(ZH)
    assert all(ZH[k].strip() for k in ZH)
    assert sum(ZH[k] != EN[k] for k in EN) > len(EN) * 0.8  # really translated


def test_every_key_the_templates_and_pages_use_is_in_the_catalog() -> None:
    console = Path(__file__).parents[2] / "src" / "aiflywheel" / "console"
    used: set[str] = set()
    for path in [*(console / "templates").glob("*.j2"), *console.glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bt\(['"]([a-z0-9_]+\.[a-z0-9_.]+)['"]""", text))
        used |= set(re.findall(r"""Denied\(\d+, ['"]([a-z0-9_]+\.[a-z0-9_.]+)['"]""", text))
    used = {k for k in used if not k.endswith(("_", "."))}  # prefixes of keys built below
    assert len(used) > 100
    assert sorted(used - set(EN)) == []
    # Keys built at run time: roles, statuses, notes, review states, price fields.
    from aiflywheel.console.app import NAV, NOTES
    from aiflywheel.planning.capacity import PRICE_KEYS
    from aiflywheel.store import API_KEY_ROLES, MODEL_STATUSES, REVIEW_STATES

    built = {f"role.{r}" for r in API_KEY_ROLES} | {f"status.{s}" for s in MODEL_STATUSES}
    built |= {f"note.{n}" for n in NOTES} | {f"review.{s}" for s in REVIEW_STATES}
    built |= {f"nav.{key}" for key, _, _ in NAV} | {f"price.{k}" for k in PRICE_KEYS}
    built |= {f"status.{s}" for s in ("running", "succeeded", "failed", "interrupted")}
    built |= {f"lang.{code}" for code in ("zh", "en")} | {"review.all"}
    built |= {f"insights.from_{kind}" for kind in ("knowledge", "template")}
    assert sorted(built - set(EN)) == []


def test_sign_in_sets_a_signed_http_only_strict_cookie(client, world) -> None:
    _, w = world
    assert client.get("/console", follow_redirects=False).headers["location"].startswith(
        "/console/login"
    )
    token = csrf_of(client)
    bad = client.post("/console/login", data={"key": "fwk_nope_nope", "csrf": token})
    assert bad.status_code == 401 and "unknown or revoked" in bad.text
    answer = client.post(
        "/console/login", data={"key": w.keys["admin"], "csrf": token}, follow_redirects=False
    )
    cookie = answer.headers["set-cookie"]
    assert "flywheel_console=" in cookie and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert w.keys["admin"] not in cookie  # the key itself never goes into the cookie
    page = client.get("/console")
    assert page.status_code == 200 and "tiny-sentiment" in page.text
    assert "admin-person" in page.text
    # A tampered cookie is no session.
    value = client.cookies.get("flywheel_console")
    payload, _, mac = value.rpartition(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    for forged in (value[:-3] + "abc", f"{flipped}.{mac}", payload):
        client.cookies.clear()
        client.cookies.set("flywheel_console", forged)
        assert client.get("/console", follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set("flywheel_console", value)
    assert client.get("/console", follow_redirects=False).status_code == 200


def test_a_client_key_cannot_sign_in_and_console_keys_cannot_use_the_api(client, world) -> None:
    _, w = world
    token = csrf_of(client)
    answer = client.post("/console/login", data={"key": w.keys["client"], "csrf": token})
    assert answer.status_code == 403 and "client" in answer.text
    api = client.post(
        "/v1/classify",
        json={"feature": "tiny-sentiment", "text": "great"},
        headers={"Authorization": f"Bearer {w.keys['viewer']}"},
    )
    assert api.status_code == 403 and "console" in api.json()["error"]["message"]


def test_a_forged_form_without_the_csrf_token_is_refused_and_changes_nothing(client, world):
    store, w = world
    sign_in(client, w.keys["admin"])
    answer = client.post(
        "/console/features/tiny-sentiment/versions/2/promote", data={"reason": "forged"}
    )
    assert answer.status_code == 403 and "security token" in answer.text
    wrong = client.post(
        "/console/features/tiny-sentiment/versions/2/promote",
        data={"reason": "forged", "csrf": "x" * 43},
    )
    assert wrong.status_code == 403
    assert store.champion("tiny-sentiment").version == 1
    assert [e.action for e in store.list_audit("tiny-sentiment")] == ["promote"]


def test_a_viewer_on_admin_and_review_actions_gets_403_and_nothing_changes(client, world):
    store, w = world
    sign_in(client, w.keys["viewer"])
    token = csrf_of(client, "/console")
    promote = client.post(
        "/console/features/tiny-sentiment/versions/2/promote",
        data={"reason": "please", "csrf": token},
    )
    assert promote.status_code == 403 and "viewer" in promote.text
    review = client.post(
        "/console/review/decide",
        data={"feature": "tiny-sentiment", "id": w.feedback_ids[0], "action": "accept",
              "csrf": token},
    )
    assert review.status_code == 403
    assert client.get("/console/keys").status_code == 403
    created = client.post("/console/keys/create", data={"role": "admin", "csrf": token})
    assert created.status_code == 403
    assert store.champion("tiny-sentiment").version == 1
    assert store.feedback_counts("tiny-sentiment")["pending"] == len(w.feedback_ids)
    assert len(store.list_api_keys()) == 4
    # The viewer still reads every other page.
    for path in ("/console", "/console/review", "/console/audit", "/console/runs",
                 "/console/features/tiny-sentiment/versions/1"):
        assert client.get(path).status_code == 200, path


def test_language_switch_is_remembered_and_every_page_follows_it(client, world) -> None:
    _, w = world
    sign_in(client, w.keys["admin"])
    assert "Features" in client.get("/console").text
    token = csrf_of(client, "/console")
    answer = client.post(
        "/console/lang", data={"lang": "zh", "next": "/console/review", "csrf": token},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/console/review"
    assert "flywheel_console_lang=zh" in answer.headers["set-cookie"]
    review = client.get("/console/review")
    assert "审核" in review.text and "待审核" in review.text
    assert "飞轮控制台" in client.get("/console/audit").text
    bad = client.post("/console/lang", data={"lang": "fr", "csrf": token})
    assert bad.status_code == 422 and "zh, en" in bad.text
    offsite = client.post(
        "/console/lang", data={"lang": "en", "next": "https://evil.example/x", "csrf": token},
        follow_redirects=False,
    )
    assert offsite.headers["location"] == "/console"


def test_review_one_by_one_relabel_errors_and_bulk_by_filter(client, world) -> None:
    store, w = world
    sign_in(client, w.keys["reviewer"])
    page = client.get("/console/review?feature=tiny-sentiment")
    assert page.status_code == 200
    assert "13812345678" not in page.text  # the queue shows the redacted text
    token = CSRF.search(page.text).group(1)
    first, second = w.feedback_ids[0], w.feedback_ids[2]
    bad = client.post(
        "/console/review/decide",
        data={"feature": "tiny-sentiment", "id": second, "action": "relabel",
              "label": "neutral", "csrf": token},
    )
    assert bad.status_code == 422
    message = html.unescape(bad.text)
    assert "relabel feedback 3 to 'neutral': not a label of feature 'tiny-sentiment'" in message
    assert "(labels: positive, negative)" in message
    assert store.list_feedback("tiny-sentiment", ids=[second])[0].review_state == "pending"
    ok = client.post(
        "/console/review/decide",
        data={"feature": "tiny-sentiment", "id": second, "action": "relabel",
              "label": "positive", "csrf": token, "next": "/console/review"},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    item = store.list_feedback("tiny-sentiment", ids=[second])[0]
    assert (item.review_state, item.corrected_label, item.reviewer) == (
        "accepted", "positive", "reviewer-person")
    client.post(
        "/console/review/decide",
        data={"feature": "tiny-sentiment", "id": first, "action": "reject", "csrf": token},
    )
    assert store.list_feedback("tiny-sentiment", ids=[first])[0].review_state == "rejected"
    # Bulk: accept every pending item the v1 model predicted as 'negative'.
    bulk = client.post(
        "/console/review/bulk",
        data={"feature": "tiny-sentiment", "state": "pending", "predicted": "negative",
              "action": "accept", "csrf": token},
        follow_redirects=False,
    )
    assert bulk.status_code == 303
    states = {i.id: (i.predicted, i.review_state) for i in store.list_feedback("tiny-sentiment")}
    for fid, (predicted, state) in states.items():
        if fid in (first, second):
            continue
        assert state == ("accepted" if predicted == "negative" else "pending"), (fid, predicted)
    # A filter that matches nothing says so.
    none = client.post(
        "/console/review/bulk",
        data={"feature": "tiny-sentiment", "state": "pending", "predicted": "nothing",
              "action": "accept", "csrf": token},
    )
    assert none.status_code == 422 and "nothing matches" in none.text


def test_admin_promotes_and_rolls_back_with_a_reason_audited(client, world) -> None:
    store, w = world
    sign_in(client, w.keys["admin"])
    page = client.get("/console/features/tiny-sentiment/versions/2")
    assert "macro-F1 <b>0.920</b>" in page.text and "[0.850, 0.950]" in page.text
    assert "majority 0.330" in page.text
    token = CSRF.search(page.text).group(1)
    url = "/console/features/tiny-sentiment/versions/2/promote"
    missing = client.post(url, data={"reason": " ", "csrf": token})
    assert missing.status_code == 422 and "needs a reason" in missing.text
    assert store.champion("tiny-sentiment").version == 1
    done = client.post(url, data={"reason": "better on feedback", "csrf": token},
                       follow_redirects=False)
    assert done.status_code == 303 and "note=promoted" in done.headers["location"]
    assert store.champion("tiny-sentiment").version == 2
    back = client.post(
        "/console/features/tiny-sentiment/rollback",
        data={"reason": "complaints", "csrf": token}, follow_redirects=False,
    )
    assert back.status_code == 303
    assert store.champion("tiny-sentiment").version == 1
    events = store.list_audit("tiny-sentiment")
    assert [(e.action, e.actor, e.reason) for e in events[-2:]] == [
        ("promote", "admin-person", "better on feedback"),
        ("rollback", "admin-person", "complaints"),
    ]
    audit = client.get("/console/audit?action=rollback")
    assert "complaints" in audit.text and "better on feedback" not in audit.text


def test_admin_creates_and_revokes_keys_and_a_revoked_session_ends(client, world) -> None:
    store, w = world
    sign_in(client, w.keys["admin"])
    token = csrf_of(client, "/console/keys")
    made = client.post("/console/keys/create",
                       data={"role": "reviewer", "name": "ana", "csrf": token})
    key = re.search(r'id="new-key">([^<]+)<', made.text).group(1)
    assert store.authenticate(key).role == "reviewer"
    other = TestClient(client.app, base_url="http://testserver")
    sign_in(other, key)
    assert other.get("/console/review").status_code == 200
    client.post("/console/keys/revoke", data={"key_id": key.split("_")[1], "csrf": token})
    assert other.get("/console/review", follow_redirects=False).status_code == 303
    bad_role = client.post("/console/keys/create", data={"role": "root", "csrf": token})
    assert bad_role.status_code == 409 and "reviewer" in bad_role.text


def test_drift_page_reads_stored_reports_and_records_one_on_request(client, world) -> None:
    store, w = world
    sign_in(client, w.keys["viewer"])
    page = client.get("/console/drift?feature=tiny-sentiment")
    assert page.status_code == 200, page.text[-600:]
    assert 'id="drift-none"' in page.text and 'id="drift-checks"' not in page.text
    token = CSRF.search(page.text).group(1)
    for _ in range(2):
        recorded = client.post("/console/drift?feature=tiny-sentiment", data={"csrf": token})
        assert recorded.status_code == 200
    assert 'id="drift-checks"' in recorded.text and "<svg" in recorded.text
    stored = client.get("/console/drift?feature=tiny-sentiment")
    history = stored.text.split('id="drift-history"')[1]
    assert history.count("<tr><td>20") == 2  # two stored reports, newest first
    assert 'id="drift-checks"' in stored.text
    overview = client.get("/console")
    assert "/console/drift?feature=tiny-sentiment" in overview.text
    forged = client.post("/console/drift?feature=tiny-sentiment", data={})
    assert forged.status_code == 403


def test_planner_prices_versions_and_names_a_non_positive_field(client, world) -> None:
    store, w = world
    sign_in(client, w.keys["viewer"])
    page = client.get("/console/planner?feature=tiny-sentiment")
    assert page.status_code == 200 and 'id="plan"' in page.text
    assert 'data-version="1"' in page.text and 'data-version="2"' in page.text
    for query, field in (
        ("qps=0", "qps"),
        ("qps=abc", "qps"),
        ("p95_ms=-3", "p95_ms"),
        ("price_cpu_core_hour=-1", "price_cpu_core_hour"),
        ("price_gpu_hour=0", "price_gpu_hour"),
    ):
        bad = client.get(f"/console/planner?feature=tiny-sentiment&{query}")
        assert bad.status_code == 422, query
        error = re.search(r'id="planner-error">([^<]+)<', bad.text).group(1)
        assert error.startswith(f"{field} must be a"), (query, error)
    unknown = client.get("/console/planner?feature=nope")
    assert unknown.status_code == 404 and "tiny-sentiment" in unknown.text


def test_runs_list_status_and_show_log_tails(client, world) -> None:
    store, w = world
    sign_in(client, w.keys["viewer"])
    runs = client.get("/console/runs")
    assert runs.status_code == 200
    assert "succeeded" in runs.text and "the splits are missing" in runs.text
    run_id = next(r.id for r, _ in store.list_runs() if r.status == "succeeded")
    detail = client.get(f"/console/runs/{run_id}")
    assert "train_log.jsonl" in detail.text and '"loss": 0.41' in html.unescape(detail.text)
    assert client.get("/console/runs/nope").status_code == 404


def test_without_auth_the_console_opens_without_sign_in_but_still_checks_csrf(world) -> None:
    store, w = world
    with TestClient(create_app(ServeConfig(auth=False), store), base_url="http://testserver") as c:
        page = c.get("/console/features/tiny-sentiment/versions/2")
        assert page.status_code == 200 and "anonymous (auth off)" in page.text
        token = CSRF.search(page.text).group(1)
        url = "/console/features/tiny-sentiment/versions/2/promote"
        assert c.post(url, data={"reason": "demo"}).status_code == 403
        assert store.champion("tiny-sentiment").version == 1
        done = c.post(url, data={"reason": "demo", "csrf": token}, follow_redirects=False)
        assert done.status_code == 303 and store.champion("tiny-sentiment").version == 2
        assert store.list_audit("tiny-sentiment")[-1].actor == "anonymous (auth off)"
