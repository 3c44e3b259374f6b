"""The loop without a server: feedback review, retrain, the gate, promote, rollback, audit."""

from __future__ import annotations

import csv
import json
import random
import sys
import uuid
from pathlib import Path

import pytest

from aiflywheel.cli import main
from aiflywheel.errors import ConflictError
from aiflywheel.loop import feedback_dataset, holds_out, promote, retrain_feature, rollback
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store
from aiflywheel.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert  # noqa: E402

EN_GOOD, EN_BAD = ["great", "love", "excellent", "perfect"], ["terrible", "hate", "broken", "awful"]
ZH_GOOD, ZH_BAD = ["很好", "满意", "喜欢", "推荐"], ["很差", "失望", "退货", "垃圾"]
FILLER = ["the", "product", "is", "really", "this", "one", "book", "hotel", "物流", "服务"]

RECIPE = """\
feature: shop-sentiment
seed: 3
data: {{source: {data}}}
model: {{name: {model}, method: finetune, max_length: 16}}
train: {{epochs: 10, batch_size: 16, learning_rate: 0.003, early_stopping_patience: 4,
        freeze_embeddings: false}}
evaluate: {{bootstrap_resamples: 300, explain_mistakes: 0, min_slice_rows: 10}}
gate: {{min_macro_f1_gain: 1.0, max_slice_drop: 5.0, feedback_holdout: 0.3}}
"""


def review(rng: random.Random, good: list[str], bad: list[str], i: int) -> tuple[str, str]:
    label = "positive" if i % 2 == 0 else "negative"
    words = rng.sample(FILLER, 3) + [rng.choice(good if label == "positive" else bad)]
    rng.shuffle(words)
    return " ".join(words) + f" {i}", label


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """English launch data; the users then write in Chinese, which v1 never saw."""
    root = tmp_path_factory.mktemp("loop-world")
    rng = random.Random(0)
    launch = [review(rng, EN_GOOD, EN_BAD, i) for i in range(200)]
    users = [review(rng, ZH_GOOD, ZH_BAD, 1000 + i) for i in range(240)]
    en_users = [review(rng, EN_GOOD, EN_BAD, 2000 + i) for i in range(240)]
    build_tiny_bert(root / "tiny-bert", [t for t, _ in launch + users + en_users])
    with (root / "launch.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(launch)
    (root / "users.json").write_text(json.dumps(users, ensure_ascii=False), encoding="utf-8")
    (root / "en_users.json").write_text(json.dumps(en_users), encoding="utf-8")
    (root / "recipe.yaml").write_text(
        RECIPE.format(data=root / "launch.csv", model=root / "tiny-bert"), encoding="utf-8"
    )
    return root


def serve_and_answer(
    store: Store, world: Path, *, flip: bool = False, users: str = "users.json"
) -> list[int]:
    """What a server and its users would do: log v1's predictions, store their labels."""
    from aiflywheel.registry import load

    users = json.loads((world / users).read_text(encoding="utf-8"))
    model = load("shop-sentiment", store=store)
    rows, answers = [], []
    for (text, label), prediction in zip(users, model.predict([t for t, _ in users]), strict=True):
        pid = uuid.uuid4().hex
        rows.append(
            {
                "id": pid,
                "feature": "shop-sentiment",
                "version": model.version,
                "text": text,
                "label": prediction.label,
                "probabilities": prediction.probabilities,
                "latency_ms": 1.0,
            }
        )
        truth = {"positive": "negative", "negative": "positive"}[label] if flip else label
        answers.append((pid, truth, prediction.label))
    store.log_predictions(rows)
    ids = []
    for pid, truth, predicted in answers:
        if truth == predicted:
            row, created = store.add_feedback(pid, thumb="up", idempotency_key=f"k-{pid}")
        else:
            row, created = store.add_feedback(pid, corrected_label=truth, comment="wrong")
        assert created
        ids.append(row.id)
    return ids


@pytest.fixture
def champion_v1(world: Path) -> Store:
    store = open_store()
    recipe = load_recipe(world / "recipe.yaml")
    train_feature(recipe, store=store, settings=get_settings())
    promote(store, "shop-sentiment", 1, actor="pm")
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
        promote(store, "shop-sentiment", 1, actor="x")
        promote(store, "shop-sentiment", 1, actor="x")
    assert (
        feedback_dataset(
            store, "shop-sentiment", load_recipe(world / "recipe.yaml"), Path(v1.model_path).parent
        ).counts.get("accepted", 0)
        == 0
    )
