"""The packaged demo help center (FAQ, policy documents) and its evaluation set.

These tests read the data with their own small parsers, independent of the assistant's
knowledge-base loader, so that a bug in the loader cannot hide a bug in the data (and
the other way round). They check counts, ids, languages, and that every expected
citation and every fact in ``eval.jsonl`` can be found in the knowledge base.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

import aiflywheel
from aiflywheel.tasks.assistant.evaluation import KINDS as EVAL_KINDS
from aiflywheel.tasks.assistant.evaluation import states_fact_form

HELP_CENTER = Path(aiflywheel.__file__).parent / "tasks" / "assistant" / "help_center"
DOCS = HELP_CENTER / "docs"

# the original set's kinds (all still present); the eval format allows more (``evaluation.KINDS``)
KINDS = {"paraphrase", "typo", "mixed", "doc_only", "out_of_scope", "person_request"}
OPTIONAL_KEYS = {"history", "scope", "excluded_entity", "note"}
DOC_FILES = {
    f"{topic}.{lang}.{ext}"
    for topic, ext in [
        ("shipping", "md"),
        ("returns", "md"),
        ("payments", "html"),
        ("accounts", "txt"),
        ("membership", "md"),
    ]
    for lang in ("en", "zh")
}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def slug(heading: str) -> str:
    """The citation anchor of a heading (the rule the knowledge base uses)."""
    return re.sub(r"[^\w]+", "-", heading.strip().lower()).strip("-")


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            assert isinstance(row, dict), f"{path.name}:{number} is not an object"
            rows.append(row)
    return rows


# -- document parsers: list of (heading, body text) in file order -----------------


def _md_sections(text: str) -> list[tuple[str, str]]:
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match:
            sections.append((match.group(2), []))
        elif sections:
            sections[-1][1].append(line)
    return [(title, "\n".join(body)) for title, body in sections]


def _txt_sections(text: str) -> list[tuple[str, str]]:
    lines = text.splitlines()
    sections: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if lines[i].strip() and re.fullmatch(r"(=+|-+)", nxt.strip()) and len(nxt.strip()) >= 3:
            sections.append((lines[i].strip(), []))
            i += 2
            continue
        if sections:
            sections[-1][1].append(lines[i])
        i += 1
    return [(title, "\n".join(body)) for title, body in sections]


class _HtmlSections(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[list] = []  # [heading parts, body parts]
        self._in_heading = False
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in {"head", "script", "style"}:
            self._skip += 1
        elif tag in {"h1", "h2", "h3"}:
            self._in_heading = True
            self.sections.append([[], []])
        elif tag in {"p", "li", "br", "ul", "ol"} and self.sections:
            self.sections[-1][1].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"head", "script", "style"}:
            self._skip -= 1
        elif tag in {"h1", "h2", "h3"}:
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        if self._skip or not self.sections:
            return
        self.sections[-1][0 if self._in_heading else 1].append(data)


def _html_sections(text: str) -> list[tuple[str, str]]:
    parser = _HtmlSections()
    parser.feed(text)
    return [("".join(h).strip(), html.unescape("".join(b))) for h, b in parser.sections]


def doc_sections(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return _md_sections(text)
    if path.suffix == ".html":
        return _html_sections(text)
    if path.suffix == ".txt":
        return _txt_sections(text)
    raise AssertionError(f"unexpected document type: {path.name}")


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faq() -> list[dict]:
    return _read_jsonl(HELP_CENTER / "faq.jsonl")


@pytest.fixture(scope="module")
def eval_set() -> list[dict]:
    return _read_jsonl(HELP_CENTER / "eval.jsonl")


@pytest.fixture(scope="module")
def references(faq: list[dict]) -> dict[str, str]:
    """Every citable reference (``source#anchor``) and the text it stands for."""
    refs = {f"faq.jsonl#{e['id']}": f"{e['question']}\n{e['answer']}" for e in faq}
    for path in sorted(DOCS.iterdir()):
        for title, body in doc_sections(path):
            refs[f"docs/{path.name}#{slug(title)}"] = f"{title}\n{body}"
    return refs


# -- FAQ -----------------------------------------------------------------------------


def test_faq_entries_are_well_formed(faq: list[dict]) -> None:
    assert len(faq) >= 80
    for entry in faq:
        assert set(entry) == {"id", "question", "answer", "category", "language"}, entry
        assert re.fullmatch(r"[a-z0-9-]+-(zh|en)", entry["id"]), entry["id"]
        assert entry["language"] == entry["id"].rsplit("-", 1)[1], entry["id"]
        assert entry["question"].strip() and entry["answer"].strip(), entry["id"]
        assert entry["category"], entry["id"]
        has_cjk = bool(_CJK.search(entry["question"] + entry["answer"]))
        assert has_cjk == (entry["language"] == "zh"), entry["id"]


def test_faq_ids_and_questions_are_unique(faq: list[dict]) -> None:
    ids = Counter(e["id"] for e in faq)
    assert [i for i, n in ids.items() if n > 1] == []
    questions = Counter(squash(e["question"]).lower() for e in faq)
    assert [q for q, n in questions.items() if n > 1] == []


def test_faq_is_bilingual(faq: list[dict]) -> None:
    languages = Counter(e["language"] for e in faq)
    assert languages["zh"] >= 35 and languages["en"] >= 35
    stems = Counter(e["id"].rsplit("-", 1)[0] for e in faq)
    both = sum(1 for n in stems.values() if n == 2)
    assert both >= 0.8 * len(stems)
    categories = {e["category"] for e in faq}
    assert {"shipping", "returns", "payments", "accounts", "membership"} <= categories


# -- documents -----------------------------------------------------------------------


def test_documents_exist_with_distinct_anchors() -> None:
    assert {p.name for p in DOCS.iterdir()} >= DOC_FILES
    for path in sorted(DOCS.iterdir()):
        sections = doc_sections(path)
        assert len(sections) >= 4, path.name
        anchors = [slug(title) for title, _ in sections]
        assert all(anchors), path.name
        assert len(set(anchors)) == len(anchors), f"{path.name}: {anchors}"
        for title, body in sections[1:]:
            assert body.strip(), f"{path.name}#{slug(title)} is empty"


def test_slug_rule() -> None:
    assert slug("## Refund timeline & costs".lstrip("# ")) == "refund-timeline-costs"
    assert slug("退款时效（工作日）") == "退款时效-工作日"


# -- evaluation set ------------------------------------------------------------------


def test_eval_rows_are_well_formed(eval_set: list[dict]) -> None:
    keys = {"id", "question", "language", "kind", "answerable", "handoff", "expected", "facts"}
    for row in eval_set:
        assert keys <= set(row) <= keys | OPTIONAL_KEYS, row.get("id")
        assert row["language"] in {"zh", "en", "mixed", "other"}, row["id"]
        assert row["kind"] in EVAL_KINDS, row["id"]
        if "history" in row:
            assert row["kind"] == "follow_up" and row["history"], row["id"]
        assert row["question"].strip(), row["id"]
        assert isinstance(row["expected"], list) and isinstance(row["facts"], list), row["id"]
        for fact in row["facts"]:
            assert isinstance(fact, list) and fact, row["id"]
            assert all(isinstance(form, str) and form.strip() for form in fact), row["id"]


def test_eval_counts(eval_set: list[dict]) -> None:
    assert len(eval_set) >= 150
    kinds = Counter(row["kind"] for row in eval_set)
    assert KINDS <= set(kinds) <= set(EVAL_KINDS)
    assert kinds["follow_up"] >= 10
    assert kinds["out_of_scope"] >= 40
    assert kinds["person_request"] >= 10
    assert kinds["doc_only"] >= 20
    languages = Counter(row["language"] for row in eval_set)
    assert languages["zh"] >= 50 and languages["en"] >= 50 and languages["mixed"] >= 10


def test_eval_ids_and_questions_are_unique(eval_set: list[dict], faq: list[dict]) -> None:
    ids = Counter(row["id"] for row in eval_set)
    assert [i for i, n in ids.items() if n > 1] == []
    questions = Counter(squash(row["question"]).lower() for row in eval_set)
    assert [q for q, n in questions.items() if n > 1] == []
    faq_questions = {squash(e["question"]).lower() for e in faq}
    assert [q for q in questions if q in faq_questions] == []


def test_answerable_matches_expected_and_handoff(eval_set: list[dict]) -> None:
    for row in eval_set:
        assert row["answerable"] == bool(row["expected"]), row["id"]
        if row["answerable"]:
            assert not row["handoff"], row["id"]
        if row["kind"] in {"out_of_scope", "person_request"}:
            assert not row["answerable"] and row["handoff"], row["id"]
        if row["kind"] == "small_talk":  # a short polite reply, no ticket
            assert not row["answerable"] and not row["handoff"], row["id"]
        if not row["answerable"]:
            assert row["facts"] == [], row["id"]
        else:
            assert 1 <= len(row["facts"]) <= 2, row["id"]


def test_expected_references_exist(eval_set: list[dict], references: dict[str, str]) -> None:
    missing = [
        (row["id"], ref) for row in eval_set for ref in row["expected"] if ref not in references
    ]
    assert missing == []
    for row in eval_set:
        assert len(set(row["expected"])) == len(row["expected"]), row["id"]
        if row["kind"] == "doc_only":
            assert all(ref.startswith("docs/") for ref in row["expected"]), row["id"]


def test_facts_are_found_in_expected_references(
    eval_set: list[dict], references: dict[str, str]
) -> None:
    missing = []
    for row in eval_set:
        texts = [squash(references.get(ref, "")) for ref in row["expected"]]
        for fact in row["facts"]:
            if not any(
                states_fact_form(text, form) if form.startswith("/") else squash(form) in text
                for form in fact
                for text in texts
            ):
                missing.append((row["id"], fact))
    assert missing == []
