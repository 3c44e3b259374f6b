"""The assistant through the real CLI: train (build, calibrate, evaluate, register),
eval, ask, kb add/list, tickets, an incremental rebuild, and one-line errors (exit 2).

The encoder is the deterministic ``HashingEncoder`` (patched in for the name
``test-hashing``, so similarities follow shared words and nothing loads a model), except
in one test that loads a tiny transformers folder through the real encoder path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.assistant_parts import HashingEncoder

from aiflywheel import cli as cli_module
from aiflywheel.cli import main
from aiflywheel.store import open_store
from aiflywheel.tasks.assistant import cli as commands_module
from aiflywheel.tasks.assistant import encoders as encoders_module
from aiflywheel.tasks.assistant.evaluation import load_eval_set, split_eval_set
from aiflywheel.tasks.assistant.records import TurnRecord, log_turn

KB = Path(__file__).parent / "fixtures" / "assistant" / "kb"

EVAL_SET = [
    {
        "id": "a1",
        "question": "How can I get my money back for an order?",
        "kind": "paraphrase",
        "expected": ["faq.jsonl#refund-en", "docs/returns.en.md#refund-timeline"],
        "facts": [["5 working days", "5 to 7 working days"]],
    },
    {
        "id": "a2",
        "question": "How long do card refunds take after the warehouse inspects the parcel?",
        "kind": "doc_only",
        "expected": ["docs/returns.en.md#refund-timeline"],
        "facts": [["5 to 7 working days"]],
    },
    {
        "id": "a3",
        "question": "Can gift cards be returned?",
        "kind": "doc_only",
        "expected": ["docs/returns.en.md#exceptions"],
        "facts": [["cannot be returned"]],
    },
    {
        "id": "a4",
        "question": "How long is the warranty on electronics?",
        "kind": "doc_only",
        "expected": ["docs/warranty.html#warranty"],
        "facts": [["two-year"]],
    },
    {
        "id": "a5",
        "question": "Which payment methods are accepted at checkout?",
        "kind": "paraphrase",
        "expected": ["faq.jsonl#payment-en"],
        "facts": [["PayPal"]],
    },
    {
        "id": "a6",
        "question": "How do I reset my password?",
        "kind": "paraphrase",
        "expected": ["faq.jsonl#password-en"],
        "facts": [["Forgot password"]],
    },
    {
        "id": "a7",
        "question": "怎么申请退款？",
        "kind": "paraphrase",
        "language": "zh",
        "expected": ["faq.jsonl#refund-zh"],
        "facts": [["原路返还"]],
    },
    {
        "id": "a8",
        "question": "运费怎么收？满多少免运费？",
        "kind": "doc_only",
        "language": "zh",
        "expected": ["docs/shipping.zh.txt#运费"],
        "facts": [["99元"]],
    },
    {
        "id": "a9",
        "question": "发票怎么开？",
        "kind": "paraphrase",
        "language": "zh",
        "expected": ["faq.jsonl#invoice-zh"],
        "facts": [["开具发票"]],
    },
    {"id": "o1", "question": "What's the weather in Paris tomorrow?", "kind": "out_of_scope"},
    {"id": "o2", "question": "Write me a poem about the sea.", "kind": "out_of_scope"},
    {"id": "o3", "question": "明天北京会下雨吗？", "kind": "out_of_scope", "language": "zh"},
    {"id": "o4", "question": "Who won the football match yesterday?", "kind": "out_of_scope"},
    {"id": "p1", "question": "转人工", "kind": "person_request", "language": "zh"},
    {"id": "p2", "question": "I want to speak to a human.", "kind": "person_request"},
]

RECIPE = """\
feature: helpdesk
task: assistant
description: Answers shoppers from a small test help center.
assistant:
  knowledge_base: {knowledge_base}
  eval_set: {eval_set}
  encoder: {encoder}
  chunk_chars: 200
  chunk_overlap: 20
{extra}"""


# ------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables print whole cells (the test terminal is 80 columns wide)."""
    monkeypatch.setattr(commands_module.console, "width", 200)
    monkeypatch.setattr(cli_module.console, "width", 200)


@pytest.fixture
def encoder(monkeypatch: pytest.MonkeyPatch) -> HashingEncoder:
    """The encoder named ``test-hashing`` (one instance: it records what it embeds)."""
    shared = HashingEncoder(name="test-hashing", dim=256)
    real = encoders_module.encoder_from_name

    def from_name(name: str = "e5-small", settings=None, **kw):
        return shared if name == "test-hashing" else real(name, settings, **kw)

    monkeypatch.setattr(encoders_module, "encoder_from_name", from_name)
    return shared


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    line = " ".join(err.split())  # rich wraps long lines on a narrow terminal
    assert line.startswith("error:"), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def _write_eval(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _recipe(
    folder: Path,
    *,
    knowledge_base: str,
    eval_set: str | None = "eval.jsonl",
    encoder: str = "test-hashing",
    extra: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(
        RECIPE.format(
            knowledge_base=knowledge_base,
            eval_set=eval_set if eval_set is not None else "null",
            encoder=encoder,
            extra=extra,
        ),
        encoding="utf-8",
    )
    return path


def _run_dir(store, feature: str, version: int) -> Path:
    return Path(store.get_model_version(feature, version).model_path).parent


# ------------------------------------------------------------------ the whole flow


def test_train_eval_ask_kb_tickets_rebuild_and_models_list(
    tmp_path: Path, capsys, encoder: HashingEncoder
) -> None:
    kb = tmp_path / "kb"
    shutil.copytree(KB, kb)
    project = tmp_path / "project"
    recipe = _recipe(project, knowledge_base=str(kb))  # eval_set relative to the recipe
    eval_path = _write_eval(project / "eval.jsonl", EVAL_SET)

    # -- train: build, calibrate (thresholds are null), evaluate, register v1 as champion
    code, out, err = _run(["train", str(recipe)], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "helpdesk v1 registered (champion, hybrid+extractive)" in flat
    assert "thresholds calibrated on" in flat
    store = open_store()
    assert store.champion("helpdesk").version == 1
    run_dir = _run_dir(store, "helpdesk", 1)
    for part in ("metrics.json", "evaluation.jsonl", "report.html", "assistant/assistant.json"):
        assert (run_dir / part).is_file(), part
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    questions = load_eval_set(eval_path)
    calibration_half, held_out = split_eval_set(questions)
    assert calibration_half and held_out
    thresholds = metrics["thresholds"]
    assert thresholds["origin"] == f"calibrated on {len(calibration_half)} evaluation questions"
    assert metrics["calibration"]["thresholds"] == thresholds
    assert metrics["calibration"]["questions"] == len(calibration_half)
    assert 0.0 <= thresholds["handoff_below"] <= 1.01
    evaluation = metrics["evaluation"]
    answerable = sum(q.answerable for q in questions)
    assert set(evaluation["retrieval"]) == {"bm25", "dense", "hybrid"}
    for figures in evaluation["retrieval"].values():
        assert figures["questions"] == answerable
        assert 0.0 <= figures["hit@1"] <= figures["hit@5"] <= 1.0
    assert evaluation["answers"]["questions"] == len(EVAL_SET)
    assert evaluation["answers"]["handoff_expected"] == 6
    rows = (run_dir / "evaluation.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["id"] for r in rows] == [q["id"] for q in EVAL_SET]
    person = [json.loads(r) for r in rows if json.loads(r)["kind"] == "person_request"]
    assert all(r["handoff"] and r["reason"] == "asked for a person" for r in person)
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    for mode in ("bm25", "dense", "hybrid"):
        assert f"<td>{mode}</td>" in report
    assert (run_dir / "assistant" / "assistant.json").read_text().count(str(eval_path)) == 1

    # -- eval (from another working directory: the recipe-relative eval set still resolves)
    code, out, err = _run(["eval", "helpdesk"], capsys)
    assert code == 0, err
    for word in ("retrieval", "bm25", "dense", "hybrid", "answers", "handoff", "report:"):
        assert word in out, word
    assert "handoffs: " in out and "2 asked for a person" in out
    evals = sorted((Path(run_dir).parent).glob("eval-*/metrics.json"))
    assert len(evals) == 1
    again = json.loads(evals[0].read_text(encoding="utf-8"))
    assert again["evaluation"]["retrieval"] == evaluation["retrieval"]

    # -- ask, as text and as JSON
    code, out, err = _run(["ask", "helpdesk", "How do I reset my password?"], capsys)
    assert code == 0, err
    assert "> How do I reset my password?" in out and "confidence" in out
    code, out, err = _run(["ask", "helpdesk", "--json", "I want to speak to a human."], capsys)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["answer_type"] == "handoff" and answer["reason"] == "asked for a person"
    assert answer["question"] == "I want to speak to a human." and answer["citations"] == []

    # -- kb add: the next question finds the new entry
    question = "Do you offer gift wrapping for birthday parcels?"
    new_answer = "Yes, gift wrapping costs 5 yuan per parcel; choose it at checkout."
    code, out, err = _run(
        ["kb", "add", "helpdesk", "--question", question, "--answer", new_answer], capsys
    )
    assert code == 0, err
    assert "added kb-added#" in out and "(en) to helpdesk v1's index" in out
    code, out, err = _run(["ask", "helpdesk", "--json", question], capsys)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["answer_type"] in ("faq", "generated"), answer
    assert "gift wrapping costs 5 yuan per parcel" in answer["answer"]
    assert any(c["citation"].startswith("kb-added#") for c in answer["citations"])
    code, out, err = _run(["kb", "list", "helpdesk"], capsys)
    assert code == 0, err
    assert "gift wrapping" in out and "cli" in out

    # -- tickets: handoffs logged by the API appear, open ones by default
    log_turn(
        store,
        TurnRecord(
            prediction_id="p-1",
            feature="helpdesk",
            version=1,
            session_id="s-1",
            question="Can I pay in bitcoin?",
            answer="I'd like a member of our support team to help with this.",
            kind="handoff",
            handoff=True,
            reason="low retrieval confidence (0.100 < 0.200)",
            confidence=0.1,
            latency_ms=3.0,
            details={},
        ),
    )
    code, out, err = _run(["tickets", "helpdesk"], capsys)
    assert code == 0, err
    assert "Can I pay in bitcoin?" in out and "open" in out and "s-1" in out

    # -- rebuild: unchanged chunks keep their embeddings, the live entry stays
    v1_chunks = metrics["knowledge_base"]["chunks"]
    with (kb / "faq.jsonl").open("a", encoding="utf-8") as faq:
        faq.write(
            json.dumps(
                {
                    "id": "hours-en",
                    "question": "When is chat support open?",
                    "answer": "Chat support is open from 9:00 to 22:00 every day.",
                }
            )
            + "\n"
        )
    encoder.passages.clear()
    code, out, err = _run(["train", str(recipe)], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "index updated from v1: 1 added, 0 removed" in flat
    assert "1 entries added live (flywheel kb add) kept in the index" in flat
    assert "helpdesk v2 registered (candidate" in flat
    assert len(encoder.passages) == 1 and "Chat support is open" in encoder.passages[0]
    v2_dir = _run_dir(store, "helpdesk", 2)
    v2 = json.loads((v2_dir / "metrics.json").read_text(encoding="utf-8"))
    assert v2["knowledge_base"]["chunks"] == v1_chunks + 2  # the new FAQ entry + the live one
    chunks = (v2_dir / "assistant" / "index").glob("gen-*/chunks.jsonl")
    texts = "".join(p.read_text(encoding="utf-8") for p in chunks)
    assert '"source": "kb-added"' in texts and "gift wrapping" in texts
    assert store.champion("helpdesk").version == 1  # a rebuild is a candidate

    # -- models list shows both versions
    code, out, err = _run(["models", "list"], capsys)
    assert code == 0, err
    assert "helpdesk" in out and "champion" in out and "candidate" in out
    assert "v1" in out and "v2" in out
    assert "hit@5" in out and "macro-F1" not in out  # an assistant's own figures


def test_a_local_transformers_folder_encoder_builds_and_answers(tmp_path: Path, capsys) -> None:
    from tests.tiny_models import build_tiny_bert

    texts = [json.dumps(r, ensure_ascii=False) for r in EVAL_SET]
    texts += [p.read_text(encoding="utf-8") for p in KB.rglob("*") if p.is_file()]
    folder = build_tiny_bert(tmp_path / "tiny-encoder", texts)
    recipe = _recipe(
        tmp_path / "project",
        knowledge_base=str(KB),
        eval_set=None,
        encoder=str(folder),
        extra="  handoff_below: 0.0\n  faq_at_least: 1.01\n  mode: bm25\n",
    )
    code, out, err = _run(["train", str(recipe)], capsys)
    assert code == 0, err
    assert "Built without an evaluation set" in out
    run_dir = _run_dir(open_store(), "helpdesk", 1)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["thresholds"] == {"handoff_below": 0.0, "faq_at_least": 1.01, "origin": "recipe"}
    assert metrics["calibration"] is None and "evaluation" not in metrics
    manifest = json.loads((run_dir / "assistant" / "index" / "manifest.json").read_text())
    assert manifest["encoder"] == str(folder)
    code, out, err = _run(
        ["ask", "helpdesk", "--json", "Which payment methods are accepted?"], capsys
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["answer_type"] == "generated" and "PayPal" in answer["answer"]
    assert "faq.jsonl#payment-en" in [c["citation"] for c in answer["citations"]]
    code, _, err = _run(["eval", "helpdesk"], capsys)
    _one_line_error(code, err, "helpdesk has no assistant.eval_set; pass --eval-set")


# ------------------------------------------------------------------ problems and bad input


def test_duplicate_faq_questions_with_different_answers_are_reported_not_fatal(
    tmp_path: Path, capsys, encoder: HashingEncoder
) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.jsonl").write_text(
        '{"question": "How do I cancel an order?", "answer": "From the order page."}\n'
        '{"question": "How do I cancel an order?", "answer": "Call us."}\n'
        '{"question": "Which cards do you take?", "answer": "Visa and Mastercard."}\n',
        encoding="utf-8",
    )
    recipe = _recipe(
        tmp_path,
        knowledge_base="kb",
        eval_set=None,
        extra="  handoff_below: 0.1\n  faq_at_least: 0.9\n",
    )
    code, out, err = _run(["train", str(recipe)], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "1 problem(s)" in flat
    assert "problem: faq.jsonl line 2 asks the same question as faq.jsonl line 1" in flat
    metrics = json.loads(
        (_run_dir(open_store(), "helpdesk", 1) / "metrics.json").read_text(encoding="utf-8")
    )
    (problem,) = metrics["knowledge_base"]["problems"]
    assert "different answer; kept line 1" in problem
    assert metrics["knowledge_base"]["faq_entries"] == 2


BAD_KNOWLEDGE_BASES = {
    "empty FAQ file": ({"faq.jsonl": ""}, ["faq.jsonl is empty"]),
    "malformed JSONL line": (
        {"faq.jsonl": '{"question": "a?", "answer": "b"}\n{"question": "c?", "answer": \n'},
        ["faq.jsonl line 2: malformed JSON"],
    ),
    "CSV without an answer column": (
        {"faq.csv": "question,category\nHow do I pay?,payment\n"},
        ["faq.csv line 1: header has no answer column", "got question,category"],
    ),
    "empty document": (
        {"faq.jsonl": '{"question": "a?", "answer": "b"}\n', "docs/guide.md": ""},
        ["docs/guide.md is empty"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_KNOWLEDGE_BASES))
def test_a_bad_knowledge_base_fails_in_one_line(
    tmp_path: Path, capsys, encoder: HashingEncoder, case: str
) -> None:
    files, fragments = BAD_KNOWLEDGE_BASES[case]
    for name, text in files.items():
        path = tmp_path / "kb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    recipe = _recipe(
        tmp_path,
        knowledge_base="kb",
        eval_set=None,
        extra="  handoff_below: 0.1\n  faq_at_least: 0.9\n",
    )
    code, _, err = _run(["train", str(recipe)], capsys)
    _one_line_error(code, err, "IngestError", *fragments)
    assert open_store().list_model_versions() == []
    assert encoder.passages == []  # failed before embedding anything


def test_a_missing_knowledge_base_or_a_bad_eval_line_fails_in_one_line(
    tmp_path: Path, capsys, encoder: HashingEncoder
) -> None:
    recipe = _recipe(tmp_path / "a", knowledge_base="nowhere")
    _write_eval(tmp_path / "a" / "eval.jsonl", EVAL_SET)
    code, _, err = _run(["train", str(recipe)], capsys)
    _one_line_error(code, err, "assistant.knowledge_base 'nowhere'", "does not exist")

    recipe = _recipe(tmp_path / "b", knowledge_base=str(KB))
    lines = [json.dumps(r, ensure_ascii=False) for r in EVAL_SET[:3]]
    lines.insert(2, '{"question": "broken",')
    (tmp_path / "b" / "eval.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = _run(["train", str(recipe)], capsys)
    line = _one_line_error(code, err, "eval.jsonl line 3: not valid JSON")
    assert str(tmp_path / "b" / "eval.jsonl") in line
    runs = open_store().list_runs()
    assert [run.status for run, _ in runs] == ["failed", "failed"]
    assert open_store().list_model_versions() == []
    left = (tmp_path / "flywheel-home" / "runs" / "helpdesk").glob("*")
    assert [p.name for p in left] == [".lock"]  # the feature's lock file; no run folder


def test_ask_and_kb_refuse_what_is_not_an_assistant(tmp_path: Path, capsys) -> None:
    code, _, err = _run(["ask", "nope", "hello?"], capsys)
    _one_line_error(code, err, "unknown feature 'nope'")
    open_store().upsert_feature("reviews", "text_classification", "", {})
    code, _, err = _run(["ask", "reviews", "hello?"], capsys)
    _one_line_error(code, err, "'reviews' is a text_classification feature, not an assistant")
    for argv in (["kb", "list", "reviews"], ["tickets", "reviews"], ["eval", "reviews"]):
        code, _, err = _run(argv, capsys)
        _one_line_error(code, err, "not an assistant")
    code, _, err = _run(
        ["kb", "add", "reviews", "--question", "q?", "--answer", "a", "--language", "xx"], capsys
    )
    _one_line_error(code, err, "--language must be zh or en, got 'xx'")
