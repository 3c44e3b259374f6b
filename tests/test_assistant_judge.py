"""The learned answerability judge: pairs built from the knowledge base (both languages,
hidden and unanswerable variants, retrieval's hard negatives), fit / score / save /
load, the policy reordering and handing off on it, and ``flywheel train`` / ``retrain``
training it (with the accepted staff answers as new pairs) behind the gate.

Tiny parts: the test help center and the deterministic ``HashingEncoder``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from tests.assistant_parts import HashingEncoder
from tests.test_assistant_cli import EVAL_SET, KB, _one_line_error, _recipe, _run, _write_eval
from tests.test_assistant_wheel import (
    FEATURE,
    GIFT_ANSWER,
    GIFT_QUESTIONS,
    NEW_GIFT_QUESTION,
    serving,
    staff_answer,
)
from tests.test_assistant_wheel import encoder as encoder  # noqa: F401 (autouse fixture)
from tests.test_assistant_wheel import keys as keys  # noqa: F401 (fixture)
from tests.test_assistant_wheel import wide_console as wide_console  # noqa: F401

from aiflywheel.errors import DataError, ModelError, NotFoundError
from aiflywheel.store import Store, open_store
from aiflywheel.tasks.assistant.extractive import ExtractiveGenerator
from aiflywheel.tasks.assistant.judge import FEATURES, JUDGE_JSON, FeatureJudge, roc_auc
from aiflywheel.tasks.assistant.judge_pairs import (
    build_judge_pairs,
    known_share,
    query_hits,
    training_rows,
)
from aiflywheel.tasks.assistant.knowledge_base import load_knowledge_base
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.policy import Assistant, Thresholds
from aiflywheel.tasks.assistant.service import load_assistant

HAN = re.compile(r"[\u4e00-\u9fff]")
JUDGE_RECIPE = "  judge:\n    kind: features\n  gate:\n    feedback_holdout: 0.4\n"


@pytest.fixture
def index(tmp_path: Path) -> KnowledgeIndex:
    kb = load_knowledge_base(KB, max_chars=200, overlap=20)
    return KnowledgeIndex.build(kb, HashingEncoder(dim=256), tmp_path / "index")


@pytest.fixture
def judge(index: KnowledgeIndex) -> FeatureJudge:
    return FeatureJudge(index).fit(build_judge_pairs(index))


def test_pairs_cover_both_languages_hidden_answers_and_hard_negatives(
    index: KnowledgeIndex,
) -> None:
    pairs = build_judge_pairs(index)
    origins = {p.origin for p in pairs}
    assert {"faq", "faq_cross", "faq_unanswerable", "heading", "first_sentence"} <= origins
    assert any(HAN.search(p.question) for p in pairs)
    assert any(not HAN.search(p.question) for p in pairs)
    by_id = {c.id: c for c in index.chunks}
    refund = next(p for p in pairs if p.origin == "faq" and "money back" in p.question)
    anchors = {by_id[c].anchor for c in refund.positives}
    assert {"refund-en", "refund-zh"} <= anchors  # the other-language entry of the topic
    cross = next(p for p in pairs if p.origin == "faq_cross" and p.question == refund.question)
    own = next(c for c in refund.positives if by_id[c].anchor == "refund-en")
    assert cross.hidden == {own} and own not in cross.positives
    gone = next(
        p for p in pairs if p.origin == "faq_unanswerable" and p.question == refund.question
    )
    assert not gone.positives and gone.hidden == refund.positives
    hits = query_hits(gone, index)
    assert hits and not {h.chunk.id for h in hits} & gone.hidden
    # the retriever's other hits are the hard negatives of the answerable pair
    labels = [h.chunk.id in refund.positives for h in query_hits(refund, index)]
    assert any(labels) and not all(labels)
    # words only the hidden chunks have count as unknown to the knowledge base
    x, y, row_origins = training_rows(pairs, index)
    assert x.shape == (len(y), len(FEATURES)) and 0 < y.sum() < len(y)
    assert set(row_origins) == origins
    share = FEATURES.index("kb_known_share")
    unanswerable = np.array([o.endswith("_unanswerable") for o in row_origins])
    assert x[unanswerable, share].mean() < x[~unanswerable, share].mean()


def test_max_questions_keeps_every_learned_pair_and_a_stable_sample(
    index: KnowledgeIndex,
) -> None:
    from aiflywheel.tasks.assistant.knowledge_base import faq_entry_chunk

    index.add_chunks([faq_entry_chunk("Do you gift wrap?", "Yes, for 5 yuan.", source="feedback")])
    every = build_judge_pairs(index)
    learned = [p for p in every if p.origin.startswith("learned")]
    assert learned and len(every) > 20
    some = build_judge_pairs(index, max_questions=20)
    assert len(some) == 20 and all(p in some for p in learned)
    assert build_judge_pairs(index, max_questions=20) == some


def test_known_share_counts_words_outside_the_hidden_chunks() -> None:
    owners = {"refund": {"a"}, "card": {"a", "b"}}
    assert known_share("refund card", frozenset(), owners) == 1.0
    assert known_share("refund card", frozenset({"a"}), owners) == 0.5
    assert known_share("weather", frozenset(), owners) == 0.0


def test_fit_score_save_load_round_trip(
    index: KnowledgeIndex, judge: FeatureJudge, tmp_path: Path
) -> None:
    chunks = index.chunks
    refund = next(c for c in chunks if c.anchor == "refund-en")
    password = next(c for c in chunks if c.anchor == "password-en")
    question = "How can I get my money back for an order?"
    scores = judge.score(question, [password, refund])
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    assert scores[1] > scores[0]
    assert judge.summary["train_auc"] > 0.7
    judge.save(tmp_path / "judge")
    assert sorted(p.name for p in (tmp_path / "judge").iterdir()) == [
        "judge.json",
        "judge.safetensors",
    ]
    loaded = FeatureJudge.load(tmp_path / "judge", index)
    assert np.allclose(loaded.score(question, [password, refund]), scores)
    assert loaded.summary == json.loads(json.dumps(judge.summary))
    with pytest.raises(NotFoundError, match="holds no judge"):
        FeatureJudge.load(tmp_path / "nothing", index)
    meta = json.loads((tmp_path / "judge" / JUDGE_JSON).read_text())
    (tmp_path / "judge" / JUDGE_JSON).write_text(json.dumps({**meta, "features": ["x"]}))
    with pytest.raises(ModelError, match="features"):
        FeatureJudge.load(tmp_path / "judge", index)
    with pytest.raises(ModelError, match="not trained"):
        FeatureJudge(index).score(question, [refund])
    only_positive = [p for p in build_judge_pairs(index) if p.origin == "faq"][:1]
    only_positive = [
        type(only_positive[0])(p.question, frozenset(c.id for c in chunks), "x")
        for p in only_positive
    ]
    with pytest.raises(DataError, match="both answering and non-answering"):
        FeatureJudge(index).fit(only_positive)


def test_roc_auc() -> None:
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert roc_auc([0.5], [True]) is None


def _assistant(index: KnowledgeIndex, judge: FeatureJudge | None, below: float) -> Assistant:
    return Assistant(
        index=index,
        generator=ExtractiveGenerator(),
        thresholds=Thresholds(handoff_below=below, faq_at_least=1.01),
        judge=judge,
    )


def test_decide_reorders_by_the_judge_and_hands_off_below_its_threshold(
    index: KnowledgeIndex,
) -> None:
    question = "How can I get my money back for an order?"
    retrieval = [h.chunk.id for h in index.search(question, 5)]
    # a judge that prefers later hits: the order it gives is retrieval's reversed
    backwards = FeatureJudge(index)
    backwards.weights = np.zeros(len(FEATURES))
    backwards.weights[FEATURES.index("inverse_position")] = -5.0
    assistant = _assistant(index, backwards, 0.0)
    decided = assistant.decide(question)
    assert [h.chunk.id for h in decided.hits] == retrieval[::-1]
    probabilities = backwards.score_hits(question, index.search(question, 5))
    assert decided.confidence == pytest.approx(probabilities.max())
    backwards.reorder = False
    assert [h.chunk.id for h in assistant.decide(question).hits] == retrieval
    # the handoff threshold applies to the judge's probability, not the cosine
    assistant.thresholds = Thresholds(handoff_below=0.99, faq_at_least=1.01)
    reply = assistant.answer(question)
    assert reply.handoff and "low retrieval confidence" in reply.reason
    assert reply.confidence == pytest.approx(probabilities.max())
    without = _assistant(index, None, 0.99).answer(question)
    assert without.confidence == pytest.approx(max(h.dense_score for h in without.hits))


def test_trained_judge_ranks_the_answer_first_and_scores_off_topic_low(
    index: KnowledgeIndex, judge: FeatureJudge
) -> None:
    assistant = _assistant(index, judge, 0.0)
    answerable = assistant.decide("How can I get my money back for an order?")
    assert answerable.hits[0].chunk.anchor in {"refund-en", "refund-timeline"}
    off_topic = assistant.decide("What will the weather be in Paris tomorrow?")
    assert off_topic.confidence < answerable.confidence


def test_train_saves_the_judge_and_retrain_learns_staff_answers_behind_the_gate(
    tmp_path: Path,
    capsys,
    keys: dict,  # noqa: F811
) -> None:
    store: Store = open_store()
    with serving(store) as api:
        tickets, feedback = staff_answer(api, keys, GIFT_QUESTIONS, GIFT_ANSWER)
    code, out, err = _run(
        ["feedback", "review", FEATURE, "--accept", "--all-pending", "--actor", "lead"], capsys
    )
    assert code == 0, err
    code, out, err = _run(["retrain", FEATURE, "--actor", "lead"], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "judge (features) trained on" in flat, flat
    v1, v2 = store.get_model_version(FEATURE, 1), store.get_model_version(FEATURE, 2)
    for version in (v1, v2):
        assert (Path(version.model_path) / "judge" / JUDGE_JSON).is_file()
    metrics = json.loads((Path(v2.model_path).parent / "metrics.json").read_text())
    v1_metrics = json.loads((Path(v1.model_path).parent / "metrics.json").read_text())
    assert metrics["judge"]["pairs"]["learned"] >= 1, metrics["judge"]
    assert "learned" not in v1_metrics["judge"]["pairs"]
    gate = json.loads((Path(v2.model_path).parent / "gate.json").read_text())
    assert isinstance(gate["passed"], bool) and gate["checks"]
    assert store.get_model_version(FEATURE, 2).status in {"champion", "candidate", "archived"}
    loaded = load_assistant(v2.model_path, feature=FEATURE, version=2, store=store)
    assert loaded.assistant.judge is not None
    decided = loaded.assistant.decide(NEW_GIFT_QUESTION)
    assert decided.hits[0].chunk.source == "feedback"


@pytest.fixture
def trained(tmp_path: Path, capsys) -> Store:
    """v1 of the helpdesk assistant with a judge, thresholds calibrated on EVAL_SET."""
    project = tmp_path / "project"
    recipe = _recipe(project, knowledge_base=str(KB), extra=JUDGE_RECIPE)
    _write_eval(project / "eval.jsonl", EVAL_SET)
    code, _, err = _run(["train", str(recipe)], capsys)
    assert code == 0, err
    return open_store()


def test_a_bad_judge_section_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    project = tmp_path / "bad"
    recipe = _recipe(project, knowledge_base=str(KB), extra="  judge:\n    kind: cross-encoder\n")
    _write_eval(project / "eval.jsonl", EVAL_SET)
    code, _, err = _run(["train", str(recipe)], capsys)
    _one_line_error(code, err, "judge", "cross-encoder")


def test_no_answer_role_answers_an_i_dont_know_from_the_first_passage_when_the_judge_says_so(
    index: KnowledgeIndex, judge: FeatureJudge, tmp_path: Path
) -> None:
    from aiflywheel.tasks.assistant.evaluation import calibrate_thresholds, load_eval_set
    from aiflywheel.tasks.assistant.policy import NO_ANSWER_REASON

    assistant = _assistant(index, judge, 0.0)
    assistant.judge_role = "no_answer"
    question = "Do you sell garden gnomes?"  # no passage sentence shares its words
    reply = assistant.answer(question)
    assert reply.handoff and reply.reason == NO_ANSWER_REASON
    probability = reply.details["judge_probability"]
    assert 0.0 <= probability <= 1.0
    # the cosine stays the confidence, and the hits keep the retrieval order
    assert reply.confidence == pytest.approx(max(h.dense_score for h in reply.hits))
    assert [h.chunk.id for h in reply.hits] == [h.chunk.id for h in index.search(question, 5)]
    # (the details round the probability to 4 decimals)
    assistant.thresholds = Thresholds(0.0, 1.01, answer_judge_at_least=probability - 1e-4)
    answered = assistant.answer(question)
    assert not answered.handoff and answered.kind == "generated"
    assert answered.details["judge_answered"] == probability
    first = assistant.decide(question).passages[0]
    assert answered.citations[0].chunk_id == first.id
    assert (
        answered.text.rsplit(" [", 1)[0].split()[:3]
        == (first.answer if first.kind == "faq" else first.text).split()[:3]
    )
    assistant.thresholds = Thresholds(0.0, 1.01, answer_judge_at_least=probability + 1e-3)
    assert assistant.answer(question).handoff
    # calibration sets the judge's cut only in this role
    questions = load_eval_set(_write_eval(tmp_path / "eval.jsonl", EVAL_SET))
    assistant.thresholds = Thresholds(0.0, 1.01)
    calibrated = calibrate_thresholds(assistant, questions).thresholds
    assert calibrated.answer_judge_at_least is not None
    assert "answer_judge_at_least" in calibrated.to_json()
    assert Thresholds(**calibrated.to_json()) == calibrated  # as a version's manifest loads
    assistant.judge_role = "confidence"
    plain = calibrate_thresholds(assistant, questions).thresholds
    assert plain.answer_judge_at_least is None and "answer_judge_at_least" not in plain.to_json()


def test_train_with_the_no_answer_role_stores_the_judge_cut_and_serves_it(
    tmp_path: Path, capsys
) -> None:
    project = tmp_path / "role"
    extra = "  judge:\n    kind: features\n    role: no_answer\n"
    recipe = _recipe(project, knowledge_base=str(KB), extra=extra)
    _write_eval(project / "eval.jsonl", EVAL_SET)
    code, _, err = _run(["train", str(recipe)], capsys)
    assert code == 0, err
    store = open_store()
    version = store.get_model_version("helpdesk", 1)
    metrics = json.loads((Path(version.model_path).parent / "metrics.json").read_text())
    cut = metrics["thresholds"]["answer_judge_at_least"]
    assert cut is not None and cut == metrics["calibration"]["thresholds"]["answer_judge_at_least"]
    loaded = load_assistant(version.model_path, feature="helpdesk", version=1, store=store)
    assert loaded.assistant.judge_role == "no_answer"
    assert loaded.assistant.thresholds.answer_judge_at_least == cut
    bad = _recipe(tmp_path / "bad", knowledge_base=str(KB), extra=extra.replace("no_answer", "x"))
    _write_eval(tmp_path / "bad" / "eval.jsonl", EVAL_SET)
    code, _, err = _run(["train", str(bad)], capsys)
    _one_line_error(code, err, "role", "x")
