"""Knowledge-base loading (FAQ files, documents) and chunking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiflywheel.errors import IngestError
from aiflywheel.tasks.assistant.chunking import Section, chunk_sections, split_text
from aiflywheel.tasks.assistant.knowledge_base import (
    faq_entry_chunk,
    heading_slug,
    load_document,
    load_faq_file,
    load_knowledge_base,
    parse_html,
    parse_markdown,
    parse_text_document,
)

KB = Path(__file__).parent / "fixtures" / "assistant" / "kb"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ the fixture folder


def test_folder_scan_follows_the_file_rule() -> None:
    kb = load_knowledge_base(KB)
    assert kb.report.faq_files == ["faq.jsonl", "faq_more.csv"]  # eval.jsonl is skipped
    assert kb.report.documents == [
        "docs/returns.en.md",
        "docs/shipping.zh.txt",
        "docs/warranty.html",
    ]  # README.md is skipped
    assert kb.report.faq_entries == 12 and len(kb.faq_chunks) == 12
    assert all(c.kind == "faq" for c in kb.chunks[:12])
    assert all(c.kind == "doc" for c in kb.chunks[12:])
    assert kb.report.problems == [] and kb.report.exact_duplicates == 0
    assert "12 FAQ entries from 2 file(s)" in kb.report.summary()


def test_faq_chunks_carry_ids_categories_and_languages() -> None:
    kb = load_knowledge_base(KB)
    by_anchor = {c.anchor: c for c in kb.faq_chunks}
    refund = by_anchor["refund-zh"]
    assert refund.citation == "faq.jsonl#refund-zh"
    assert refund.text == "怎么申请退款？" and "原路返还" in refund.answer
    assert refund.category == "refunds" and refund.language == "zh"
    assert by_anchor["refund-en"].language == "en"
    csv_entry = next(c for c in kb.faq_chunks if c.source == "faq_more.csv" and "积分" in c.text)
    assert csv_entry.anchor.startswith("faq-") and csv_entry.language == "zh"
    assert csv_entry.category == "account"


def test_document_sections_keep_headings_and_unique_anchors() -> None:
    kb = load_knowledge_base(KB)
    citations = [c.citation for c in kb.document_chunks]
    assert "docs/returns.en.md#refund-timeline" in citations
    assert "docs/returns.en.md#refund-timeline-2" in citations
    assert "docs/shipping.zh.txt#配送说明" in citations and "docs/shipping.zh.txt#运费" in citations
    assert "docs/warranty.html#how-to-claim" in citations
    fee = next(c for c in kb.document_chunks if c.anchor == "运费")
    assert fee.title == "运费" and fee.language == "zh" and "免运费" in fee.text
    exceptions = next(c for c in kb.document_chunks if c.anchor == "exceptions")
    assert "# not a heading inside a code fence" in exceptions.text


def test_ids_are_stable_across_loads() -> None:
    first = [c.id for c in load_knowledge_base(KB).chunks]
    assert first == [c.id for c in load_knowledge_base(KB).chunks]
    assert len(set(first)) == len(first)


# ------------------------------------------------------------------ FAQ files


def test_jsonl_and_csv_read_the_same_fields(tmp_path: Path) -> None:
    jsonl = write(
        tmp_path / "a.jsonl",
        '{"question": "Q1?", "answer": "A1", "category": "c", "id": "x1", "language": "en"}\n'
        "\n"
        '{"question": "问题二", "answer": "答案二"}\n',
    )
    entries = load_faq_file(jsonl)
    assert [(e.id, e.line, e.category, e.language) for e in entries] == [
        ("x1", 1, "c", "en"),
        (entries[1].id, 3, "", "zh"),
    ]
    odd = write(tmp_path / "odd.jsonl", '{"question": "a\u2028b?", "answer": "c\x85d"}\n')
    assert [(e.question, e.answer, e.line) for e in load_faq_file(odd)] == [
        ("a\u2028b?", "c\x85d", 1)
    ]
    csv_file = write(
        tmp_path / "b.csv",
        'Question,Answer\n"multi\nline?",one\n\nsecond?,two\n',
    )
    rows = load_faq_file(csv_file)
    assert [(e.question, e.line) for e in rows] == [("multi\nline?", 2), ("second?", 5)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", r"empty.jsonl is empty"),
        (
            "bad.jsonl",
            '{"question": "q", "answer": "a"}\n{"question": ',
            r"bad.jsonl line 2: malformed JSON",
        ),
        ("list.jsonl", '["q", "a"]\n', r"list.jsonl line 1: expected a JSON object"),
        ("noanswer.jsonl", '{"question": "q"}\n', r"noanswer.jsonl line 1: answer is missing"),
        (
            "blank.jsonl",
            '\n{"question": " ", "answer": "a"}\n',
            r"blank.jsonl line 2: question is empty",
        ),
        ("cols.csv", "q,a\nx,y\n", r"cols.csv line 1: header has no question or answer column"),
        ("rows.csv", "question,answer\nok,fine\nnothing,\n", r"rows.csv line 3: answer is empty"),
        ("binary.csv", b"question,answer\n\x00\x01\x02", r"binary.csv looks like a binary file"),
        (
            "latin.jsonl",
            '{"question": "caf\xe9", "answer": "x"}'.encode("latin-1"),
            r"latin.jsonl is not UTF-8 text \(undecodable byte at line 1",
        ),
    ],
)
def test_faq_errors_name_the_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(IngestError, match=message) as caught:
        load_faq_file(path)
    assert "\n" not in str(caught.value)


def test_conflicting_duplicates_are_reported_and_exact_ones_counted(tmp_path: Path) -> None:
    write(
        tmp_path / "faq.jsonl",
        "\n".join(
            json.dumps(row, ensure_ascii=False)
            for row in [
                {"question": "How do I reset my password?", "answer": "Use the link."},
                {"question": "how do i reset my password", "answer": "Use  the link."},
                {"question": "HOW DO I RESET MY PASSWORD!!", "answer": "Call us."},
                {"question": "退款多久到账？", "answer": "三天。"},
            ]
        ),
    )
    write(tmp_path / "more.csv", "question,answer\n退款多久到账,五天。\n")
    kb = load_knowledge_base(tmp_path)
    assert kb.report.exact_duplicates == 1
    assert len(kb.faq_chunks) == 2
    assert kb.faq_chunks[0].answer == "Use the link."
    assert kb.report.problems == [
        "faq.jsonl line 3 asks the same question as faq.jsonl line 1 ('How do I reset my "
        "password?') with a different answer; kept line 1",
        "more.csv line 2 asks the same question as faq.jsonl line 4 ('退款多久到账？') with a "
        "different answer; kept line 4",
    ]


def test_reused_ids_are_reported(tmp_path: Path) -> None:
    write(
        tmp_path / "faq.jsonl",
        '{"id": "a", "question": "one?", "answer": "1"}\n'
        '{"id": "a", "question": "two?", "answer": "2"}\n',
    )
    kb = load_knowledge_base(tmp_path)
    assert len(kb.chunks) == 1
    assert kb.report.problems == ["faq.jsonl line 2 reuses id 'a' of faq.jsonl line 1; kept line 1"]


def test_faq_entry_chunk_for_runtime_entries() -> None:
    chunk = faq_entry_chunk("  发票怎么开？ ", "在订单页申请。", category="billing")
    assert chunk.kind == "faq" and chunk.source == "kb-added" and chunk.language == "zh"
    assert chunk.text == "发票怎么开？" and chunk.anchor.startswith("faq-")
    assert chunk == faq_entry_chunk("发票怎么开？", "在订单页申请。", category="billing")
    assert chunk.id != faq_entry_chunk("发票怎么开？", "联系客服。", category="billing").id
    assert faq_entry_chunk("q?", "a", entry_id="my-id").citation == "kb-added#my-id"
    with pytest.raises(IngestError, match="needs a non-empty answer"):
        faq_entry_chunk("q?", "  ")


# ------------------------------------------------------------------ documents


def test_heading_slug() -> None:
    assert heading_slug("  Refund timeline ") == "refund-timeline"
    assert heading_slug("What's new? (2024)") == "what-s-new-2024"
    assert heading_slug("退款 / 退货") == "退款-退货"


def test_markdown_sections() -> None:
    text = (
        "Intro line.\n\n# Title #\n\nSee [the form](http://x/y) for **details**.\n\n"
        "## Title\nmore\n"
    )
    sections = parse_markdown(text)
    assert sections == [
        Section(title="", anchor="", text="Intro line."),
        Section(title="Title", anchor="title", text="See the form for details."),
        Section(title="Title", anchor="title-2", text="more"),
    ]


def test_text_documents_with_and_without_setext_headings() -> None:
    assert parse_text_document("Para one.\n\nPara two.\n") == [
        Section(title="", anchor="", text="Para one.\n\nPara two.")
    ]
    sections = parse_text_document("Top\n===\nbody\n\nSub part\n--------\nmore body\n")
    assert [(s.title, s.anchor, s.text) for s in sections] == [
        ("Top", "top", "body"),
        ("Sub part", "sub-part", "more body"),
    ]


def test_html_sections_skip_scripts_and_styles() -> None:
    html = (
        "<html><head><style>h1{}</style><title>T</title></head><body>"
        "<h1>Help &amp; support</h1><p>First <a href='#'>para</a>.</p>"
        "<script>alert('no')</script><h2>Fees</h2><ul><li>one</li><li>two</li></ul>"
        "<h4>minor</h4><td>cell</td></body></html>"
    )
    sections = parse_html(html)
    assert [(s.title, s.anchor) for s in sections] == [
        ("Help & support", "help-support"),
        ("Fees", "fees"),
    ]
    assert sections[0].text == "First para."
    assert sections[1].text == "one\ntwo\nminor\ncell"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.md", "  \n\n", "empty.md is empty, expected a Markdown document"),
        ("blob.html", b"<html>\x00\x00\x00", "blob.html looks like a binary file"),
        ("gbk.txt", "退款".encode("gbk"), "gbk.txt is not UTF-8 text"),
        ("only.html", "<script>x()</script>", "only.html has no text"),
    ],
)
def test_document_errors_name_the_file(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    with pytest.raises(IngestError, match=message):
        load_document(write(tmp_path / name, content))


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="does not exist"):
        load_knowledge_base(tmp_path / "missing")
    write(tmp_path / "notes.pdf", b"%PDF")
    write(tmp_path / "eval.jsonl", '{"question": "q", "answer": "a"}')
    with pytest.raises(IngestError, match="no FAQ or document files under"):
        load_knowledge_base(tmp_path)
    with pytest.raises(IngestError, match="neither a FAQ file"):
        load_knowledge_base(tmp_path / "notes.pdf")


def test_several_paths_and_files(tmp_path: Path) -> None:
    faq = write(tmp_path / "one" / "eval_style.jsonl", '{"question": "q?", "answer": "a"}')
    write(tmp_path / "two" / "docs" / "a.md", "# A\ntext")
    write(tmp_path / "two" / ".hidden" / "b.md", "# B\nhidden")
    kb = load_knowledge_base([faq, tmp_path / "two"])
    assert [c.citation for c in kb.chunks] == [
        f"eval_style.jsonl#{kb.chunks[0].anchor}",
        "docs/a.md#a",
    ]


# ------------------------------------------------------------------ chunking


def test_short_text_is_one_chunk() -> None:
    assert split_text("  one short paragraph. ") == ["one short paragraph."]
    assert split_text("   ") == []


def test_chunks_respect_size_end_at_sentences_and_overlap() -> None:
    sentences = [f"Sentence number {i} talks about refunds and parcels." for i in range(30)]
    text = " ".join(sentences)
    pieces = split_text(text, max_chars=200, overlap=40)
    assert len(pieces) > 5
    assert all(len(p) <= 200 for p in pieces)
    assert all(p.endswith(".") for p in pieces)  # every cut is at a sentence end
    for left, right in zip(pieces, pieces[1:], strict=False):
        shared = next(n for n in range(min(len(left), 40), 0, -1) if left.endswith(right[:n]))
        assert shared >= 10  # the next chunk repeats the end of this one
    for sentence in sentences:  # nothing is lost
        assert any(sentence in p for p in pieces)


def test_chinese_text_is_cut_at_chinese_sentence_ends() -> None:
    text = "".join(f"第{i}条：退货需要保持商品完好，并在七天内申请。" for i in range(40))
    pieces = split_text(text, max_chars=120, overlap=20)
    assert all(len(p) <= 120 for p in pieces)
    assert all(p.endswith("。") for p in pieces[:-1])
    assert pieces[-1].endswith("第39条：退货需要保持商品完好，并在七天内申请。")


def test_unbreakable_text_is_cut_hard() -> None:
    pieces = split_text("x" * 500, max_chars=100, overlap=10)
    assert all(len(p) <= 100 for p in pieces) and "".join(pieces).count("x") >= 500


def test_bad_chunk_settings() -> None:
    with pytest.raises(ValueError, match="overlap must be in"):
        split_text("text", max_chars=100, overlap=60)


def test_chunk_sections_keep_section_fields() -> None:
    text = " ".join(f"Free shipping over {i} dollars." for i in range(40))
    section = Section(title="Shipping fees", anchor="shipping-fees", text=text)
    chunks = chunk_sections([section], source="docs/fees.md", max_chars=120, overlap=20)
    assert len(chunks) == len(split_text(text, max_chars=120, overlap=20)) > 5
    assert {(c.source, c.anchor, c.title, c.language, c.kind) for c in chunks} == {
        ("docs/fees.md", "shipping-fees", "Shipping fees", "en", "doc")
    }
    assert len({c.id for c in chunks}) == len(chunks)


def test_identical_chunks_are_kept_once() -> None:
    section = Section(title="Fees", anchor="fees", text="Free over $50. " * 40)
    pieces = split_text(section.text, max_chars=120, overlap=20)
    chunks = chunk_sections([section, section], source="f.md", max_chars=120, overlap=20)
    assert len(chunks) == len(set(pieces)) < len(pieces)
