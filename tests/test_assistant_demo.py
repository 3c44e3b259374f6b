"""The shipped demo assistant, built for real (packaged e5-small, extractive generator)
from ``flywheel init --template help-center``, measured on its 253-question evaluation
set against the targets of the assistant issue.

Built once per module (about a minute on two CPU cores, most of it embedding 252
chunks and answering every question twice: calibration and evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiflywheel.cli import main
from aiflywheel.store import open_store

pytestmark = pytest.mark.packaged


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``flywheel init --template help-center`` + ``flywheel train`` in a home of its own;
    the metrics, the evaluation rows and the home."""
    home = tmp_path_factory.mktemp("flywheel-home")
    recipe = tmp_path_factory.mktemp("project") / "recipe.yaml"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLYWHEEL_HOME", str(home))
        env.delenv("FLYWHEEL_DB_URL", raising=False)
        assert main(["init", "--template", "help-center", "--output", str(recipe)]) == 0
        assert main(["train", str(recipe)]) == 0
        version = open_store().get_model_version("help-center", 1)
    run_dir = Path(version.model_path).parent
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    rows = [
        json.loads(line)
        for line in (run_dir / "evaluation.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return {"metrics": metrics, "rows": rows, "home": home}


def test_the_template_builds_the_documented_assistant(demo: dict[str, Any]) -> None:
    metrics = demo["metrics"]
    assert metrics["encoder"] == "e5-small" and metrics["method"] == "hybrid+extractive"
    kb = metrics["knowledge_base"]
    assert (kb["faq_entries"], kb["problems"]) == (116, [])
    assert metrics["thresholds"]["origin"].startswith("calibrated on ")
    # the judge's cut for an "I don't know" reaches the version (issue 12's no_answer role)
    assert metrics["thresholds"]["answer_judge_at_least"] is not None
    assert metrics["judge"]["kind"] == "features"
    assert len(demo["rows"]) == 253
    assert metrics["evaluation"]["answers"]["unsupported_answers"] == 0


def test_hybrid_retrieval_finds_a_right_passage_in_the_top_5_for_90_percent(
    demo: dict[str, Any],
) -> None:
    retrieval = demo["metrics"]["evaluation"]["retrieval"]
    hybrid = retrieval["hybrid"]["hit@5"]
    assert retrieval["hybrid"]["questions"] == 173
    assert hybrid >= 0.90
    assert hybrid >= retrieval["bm25"]["hit@5"]
    assert hybrid >= retrieval["dense"]["hit@5"]


@pytest.mark.xfail(
    strict=True,
    reason="not met with e5-small + the extractive generator + the judge in the no_answer "
    "role: measured handoff precision 0.61 at recall 0.88 on the 253 questions (held out: "
    "0.58 at 0.84); the cosine cut cannot separate near-domain questions from answerable "
    "ones, and English answerable questions score lower than Chinese ones",
)
def test_handoffs_reach_recall_90_with_precision_80(demo: dict[str, Any]) -> None:
    answers = demo["metrics"]["evaluation"]["answers"]
    assert answers["handoff_recall"] >= 0.90
    assert answers["handoff_precision"] >= 0.80


def test_handoffs_and_answers_hold_their_measured_level(demo: dict[str, Any]) -> None:
    """Floors a little under the measured figures, so a change that loses ground shows."""
    evaluation = demo["metrics"]["evaluation"]
    answers = evaluation["answers"]
    assert answers["handoff_recall"] >= 0.85
    assert answers["handoff_precision"] >= 0.57
    assert answers["answer_accuracy"] >= 0.50
    by_kind = evaluation["by_kind"]
    assert by_kind["person_request"]["handoff_reasons"] == {"asked for a person": 15}
    assert by_kind["out_of_scope"]["handoff_recall"] >= 0.80
    for row in demo["rows"]:
        if row["answer_type"] in ("faq", "generated"):
            assert row["citations"], row["id"]
        if row["kind"] == "person_request":
            assert row["handoff"], row["id"]


def test_ask_answers_the_demo_in_both_languages(
    demo: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_HOME", str(demo["home"]))
    capsys.readouterr()
    questions = ["运费怎么算？满多少包邮？", "How much is shipping and when is it free?"]
    for question, fact, cited in zip(
        questions, ("99 元", "¥99"), ("ship-01-zh", "ship-01-en"), strict=True
    ):
        assert main(["ask", "help-center", "--json", question]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["answer_type"] in ("faq", "generated") and fact in answer["answer"]
        assert f"faq.jsonl#{cited}" in [c["citation"] for c in answer["citations"]]
    assert main(["ask", "help-center", "--json", "Write me a poem about autumn leaves."]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["handoff"] is True and answer["answer_type"] == "handoff"
