"""`flywheel demo turn`: a real server subprocess, users over HTTP, retrain, hot swap."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from aiflywheel.cli import main
from aiflywheel.errors import DataError
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification.demo_turn import held_back_users, turn_the_wheel
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from loop_world import make_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = make_world(tmp_path_factory.mktemp("turn-world"))
    users = json.loads((root / "users.json").read_text(encoding="utf-8"))
    with (root / "users.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(users)
    return root


def test_one_turn_over_http_promotes_and_the_server_follows(world: Path, capsys) -> None:
    store = open_store()
    trained = train_feature(
        load_recipe(world / "recipe.yaml"), store=store, settings=get_settings()
    )
    lines: list[str] = []
    result = turn_the_wheel(
        "shop-sentiment",
        store=store,
        settings=get_settings(),
        sources=[str(world / "users.csv")],
        users=200,
        report=lines.append,
    )
    assert result.served_version == 1 and result.predictions == 200
    assert result.feedback_stored == 200 and result.corrections > 0
    assert result.decision == "promoted", result.reason
    assert result.answered_by_after == 2 == store.champion("shop-sentiment").version
    assert any("no restart" in line for line in lines)
    users = {text for text, _ in json.loads((world / "users.json").read_text(encoding="utf-8"))}
    assert {item.text for item in store.list_feedback("shop-sentiment")} <= users
    assert trained.run_dir.is_dir()


def test_not_enough_held_back_rows(world: Path) -> None:
    store = open_store()
    trained = train_feature(
        load_recipe(world / "recipe.yaml"), store=store, settings=get_settings()
    )
    with pytest.raises(DataError, match="labelled rows the feature has not seen"):
        held_back_users([str(world / "launch.csv")], trained.run_dir / "dataset.jsonl", 10, 1)
    assert main(["demo", "turn", "ghost"]) == 2
