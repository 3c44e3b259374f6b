"""The loop without a server: feedback review, retrain, the gate, promote, rollback, audit."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from aiflywheel.cli import main
from aiflywheel.core.versions import promote, rollback
from aiflywheel.errors import ConflictError
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store
from aiflywheel.tasks.text_classification.retrain import (
    feedback_dataset,
    holds_out,
    retrain_feature,
)
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from loop_world import make_world, serve_and_answer  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("loop-world"))


@pytest.fixture
def champion_v1(world: Path) -> Store:
    store = open_store()
    recipe = load_recipe(world / "recipe.yaml")
    train_feature(recipe, store=store, settings=get_settings())
    # The tiny v1 does not beat its baseline; it serves to collect the feedback it lacks.
    promote(store, "shop-sentiment", 1, actor="pm", force=True, reason="collect feedback")
    return store


def test_feedback_turns_the_wheel_and_rollback_undoes_it(
    world: Path, champion_v1: Store, tmp_path: Path, capsys
) -> None:
    store = champion_v1
    ids = serve_and_answer(store, world)
    assert store.feedback_counts("shop-sentiment")["pending"] == len(ids)

    # Review through the CLI: export, accept in the file, import back.
    exported = tmp_path / "review.csv"
    assert main(["feedback", "export", "shop-sentiment", "-o", str(exported)]) == 0
    with exported.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(ids) and {r["review_state"] for r in rows} == {"pending"}
    for row in rows:
        row["review_state"] = "accepted"
    with exported.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["feedback", "import", "shop-sentiment", str(exported), "--actor", "ann"]) == 0
    assert store.feedback_counts("shop-sentiment")["accepted"] == len(ids)

    result = retrain_feature("shop-sentiment", store=store, settings=get_settings(), actor="ann")
    assert (result.champion_version, result.candidate_version) == (1, 2)
    assert result.decision == "promoted", result.gate.reason
    assert result.gate.candidate["feedback"] > result.gate.champion["feedback"]
    # The gate scores the champion as loaded; that is the figure the registry holds.
    registered = store.get_model_version("shop-sentiment", 1).metrics["macro_f1"]
    assert result.gate.champion["test"] == pytest.approx(registered, abs=1e-9)
    assert result.data["held_out"] > 0 and result.data["used_for_training"] > 0
    assert store.champion("shop-sentiment").version == 2
    assert (result.run_dir / "gate.json").is_file()
    test_rows = (result.run_dir / "splits" / "test.jsonl").read_text(encoding="utf-8")
    v1_dir = Path(store.get_model_version("shop-sentiment", 1).model_path).parent
    assert test_rows == (v1_dir / "splits" / "test.jsonl").read_text(encoding="utf-8")
    train_ids = {
        json.loads(line)["id"]
        for line in (result.run_dir / "splits" / "train.jsonl").read_text().splitlines()
    }
    held = {f"feedback-{i}" for i in ids if holds_out("shop-sentiment", i, 0.3)}
    assert held and not held & train_ids

    assert main(["rollback", "shop-sentiment", "--actor", "ops", "--reason", "complaints"]) == 0
    assert store.champion("shop-sentiment").version == 1
    capsys.readouterr()
    assert main(["audit", "shop-sentiment", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [(e["action"], e["from_version"], e["to_version"], e["decision"]) for e in events] == [
        ("promote", None, 1, "promoted"),
        ("retrain", 1, 2, "promoted"),
        ("rollback", 2, 1, "rolled back"),
    ]
    assert events[1]["actor"] == "ann" and events[2]["reason"] == "complaints"
    assert events[1]["details"]["candidate"]["gate_scores"]["all"] > 0
    with pytest.raises(ConflictError, match="first champion"):
        rollback(store, "shop-sentiment", actor="ops")


def test_the_gate_refuses_a_worse_candidate(world: Path, champion_v1: Store, capsys) -> None:
    store = champion_v1
    # Users who answer wrongly on the kind of text the frozen test set holds.
    ids = serve_and_answer(store, world, flip=True, users="en_users.json")
    assert main(["feedback", "review", "shop-sentiment", "--accept", "--all-pending"]) == 0
    assert main(["retrain", "shop-sentiment", "--actor", "ann"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "shop-sentiment v2 kept out" in out and "fail" in out, out
    assert store.champion("shop-sentiment").version == 1
    v2 = store.get_model_version("shop-sentiment", 2)
    assert v2.status == "rejected" and v2.metrics["gate"]["passed"] is False
    (event,) = [e for e in store.list_audit("shop-sentiment") if e.action == "retrain"]
    assert event.decision == "kept" and event.reason.startswith("kept the champion")
    assert main(["promote", "shop-sentiment:2"]) == 2
    assert "did not pass the promotion gate" in " ".join(capsys.readouterr().err.split())
    assert main(["promote", "shop-sentiment:2", "--force", "--reason", "try it"]) == 0
    assert store.champion("shop-sentiment").version == 2
    assert len(ids) == 240


def test_feedback_review_and_bad_input(world: Path, champion_v1: Store, tmp_path, capsys) -> None:
    store = champion_v1
    ids = serve_and_answer(store, world)
    capsys.readouterr()
    assert main(["retrain", "shop-sentiment"]) == 2
    assert "has 0 new accepted feedback item(s)" in " ".join(capsys.readouterr().err.split())
    assert main(["feedback", "list", "shop-sentiment", "--limit", "5"]) == 0
    assert "240 pending" in capsys.readouterr().out
    assert main(["feedback", "review", "shop-sentiment", "--reject", "--ids", f"{ids[0]}"]) == 0
    assert (
        main(
            [
                "feedback",
                "review",
                "shop-sentiment",
                "--accept",
                "--ids",
                f"{ids[1]}",
                "--label",
                "negative",
            ]
        )
        == 0
    )
    (item,) = store.list_feedback("shop-sentiment", ids=[ids[1]])
    assert (item.review_state, item.corrected_label) == ("accepted", "negative")
    assert store.list_feedback("shop-sentiment", ids=[ids[0]])[0].review_state == "rejected"

    bad = tmp_path / "bad.jsonl"
    cases = [
        (["feedback", "review", "shop-sentiment", "--accept"], "exactly one of --ids"),
        (["feedback", "review", "shop-sentiment", "--ids", "1"], "exactly one of --accept"),
        (["feedback", "review", "shop-sentiment", "--accept", "--ids", "x"], "comma-separated"),
        (["feedback", "review", "shop-sentiment", "--accept", "--ids", "99999"], "99999"),
        (
            ["feedback", "review", "shop-sentiment", "--accept", "--all-pending", "--label", "meh"],
            "'meh' is not a label",
        ),
        (["feedback", "export", "shop-sentiment", "-o", str(tmp_path / "x.txt")], ".jsonl or .csv"),
        (["feedback", "list", "ghost"], "unknown feature 'ghost'"),
        (["feedback", "list", "shop-sentiment", "--state", "maybe"], "got 'maybe'"),
        (["feedback", "import", "shop-sentiment", str(bad)], "line 2"),
        (["rollback", "shop-sentiment"], "first champion"),
        (["promote", "shop-sentiment"], "name the version"),
    ]
    bad.write_text(
        json.dumps({"id": ids[2], "review_state": "accepted"})
        + "\n"
        + json.dumps({"id": ids[3], "review_state": "approved"})
        + "\n",
        encoding="utf-8",
    )
    for args, message in cases:
        code = main(args)
        err = " ".join(capsys.readouterr().err.split())
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    # the bad import changed nothing
    assert store.list_feedback("shop-sentiment", ids=[ids[2]])[0].review_state == "pending"


def test_retrain_needs_a_champion(world: Path) -> None:
    store = open_store()
    train_feature(load_recipe(world / "recipe.yaml"), store=store, settings=get_settings())
    with pytest.raises(ConflictError, match="no champion yet"):
        retrain_feature("shop-sentiment", store=store, settings=get_settings(), actor="x")
    v1 = store.get_model_version("shop-sentiment", 1)
    with pytest.raises(ConflictError, match="already the champion"):
        promote(store, "shop-sentiment", 1, actor="x", force=True, reason="feedback")
        promote(store, "shop-sentiment", 1, actor="x", force=True, reason="feedback")
    assert (
        feedback_dataset(
            store, "shop-sentiment", load_recipe(world / "recipe.yaml"), Path(v1.model_path).parent
        ).counts.get("accepted", 0)
        == 0
    )


def _register(store: Store, feature: str, metrics: dict) -> int:
    """A version row with given metrics (promote reads metrics, not the model)."""
    store.upsert_feature(feature, "text_classification", "tiny", {"feature": feature})
    row = store.register_model_version(
        feature,
        run_id=None,
        dataset_version_id=None,
        model_path="/nonexistent/model",
        base_model="tfidf",
        method="baseline",
        metrics=metrics,
        recipe={"feature": feature},
    )
    return row.version


def test_a_version_that_lost_to_its_baseline_needs_force_and_a_reason(capsys) -> None:
    store = open_store()
    verdict = "tfidf is worse than the tfidf baseline by 4.0 macro-F1 points: keep the baseline"
    loser = {"macro_f1": 0.7, "beats_baseline": False, "verdict": verdict}
    v1 = _register(store, "lost", loser)
    # Even as the first champion: there is a baseline to compare against.
    assert main(["promote", f"lost:{v1}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "lost v1 did not beat its baseline" in err and "keep the baseline" in err, err
    assert store.champion("lost") is None
    with pytest.raises(ConflictError, match="needs a reason"):
        promote(store, "lost", v1, actor="pm", force=True)
    assert main(["promote", "lost:1", "--force", "--reason", "collect feedback"]) == 0
    assert store.champion("lost").version == 1
    (event,) = store.list_audit("lost")
    assert event.reason == "collect feedback" and event.details["forced"] is True

    # A winner, and a version without a baseline comparison (an assistant), need no force.
    winner = _register(store, "lost", {"macro_f1": 0.9, "beats_baseline": True})
    promote(store, "lost", winner, actor="pm")
    helper = _register(store, "helper", {"hit_at_5": 0.9})
    promote(store, "helper", helper, actor="pm")
    assert store.champion("lost").version == winner and store.champion("helper").version == 1
