"""Loading a knowledge base: FAQ files and documents into citable chunks.

A knowledge base is a folder (or a list of folders and files). A folder is scanned
recursively, skipping hidden files and folders, with this rule:

- FAQ files: ``*.jsonl`` and ``*.csv`` whose name does not start with ``eval`` (an
  ``eval*.jsonl`` next to the FAQ holds evaluation questions, not knowledge). Each
  entry has ``question`` and ``answer`` and optionally ``category``, ``id`` and
  ``language``; CSV files name them in a header row.
- Documents: ``.md``/``.markdown`` (ATX ``#`` headings), ``.txt`` (setext headings: a
  line underlined with ``===`` or ``---``; otherwise paragraphs) and ``.html``/``.htm``
  (``h1``-``h3`` headings, text of paragraphs, list items, table cells...; scripts and
  styles skipped), except ``README.md``, which describes the folder.

A file named directly is taken by its suffix, whatever its name. Every FAQ entry
becomes one chunk of kind ``faq`` (anchor = its id, default a hash of the question);
documents are cut into sections at headings and sections into chunks (see
``chunking``), anchored at the slug of the nearest heading.

Unreadable input (empty file, binary or non-UTF-8 bytes, malformed JSON line, a FAQ
entry without question or answer) raises ``IngestError`` naming the file and line.
Conflicting duplicate questions are reported in ``KnowledgeBaseReport.problems`` and
the first one is kept; exact duplicates are dropped and counted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from aiflywheel.data.language import detect_language
from aiflywheel.errors import IngestError
from aiflywheel.tasks.assistant.chunking import (
    DEFAULT_MAX_CHARS,
    DEFAULT_OVERLAP,
    Section,
    chunk_sections,
    make_chunk,
)
from aiflywheel.tasks.assistant.types import Chunk

FAQ_SUFFIXES = (".jsonl", ".csv")
DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm")
FAQ_FIELDS = ("question", "answer", "category", "id", "language")
RUNTIME_SOURCE = "kb-added"


# ------------------------------------------------------------------ value types


@dataclass(frozen=True)
class FaqEntry:
    """One FAQ entry as read from a file, with where it came from (1-based line)."""

    id: str
    question: str
    answer: str
    category: str
    language: str
    source: str
    line: int


@dataclass
class KnowledgeBaseReport:
    """What loading found: files read, counts, and problems a person should fix."""

    faq_files: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    faq_entries: int = 0
    document_chunks: int = 0
    exact_duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    languages: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the CLI."""
        langs = ", ".join(f"{k} {v}" for k, v in sorted(self.languages.items()))
        return (
            f"{self.faq_entries} FAQ entries from {len(self.faq_files)} file(s), "
            f"{self.document_chunks} chunks from {len(self.documents)} document(s)"
            f"{f' ({langs})' if langs else ''}; {self.exact_duplicates} exact duplicate(s) "
            f"dropped, {len(self.problems)} problem(s)"
        )


@dataclass
class KnowledgeBase:
    """The chunks of a knowledge base (FAQ entries first, then documents) and its report."""

    chunks: list[Chunk]
    report: KnowledgeBaseReport

    @property
    def faq_chunks(self) -> list[Chunk]:
        return [c for c in self.chunks if c.kind == "faq"]

    @property
    def document_chunks(self) -> list[Chunk]:
        return [c for c in self.chunks if c.kind == "doc"]


# ------------------------------------------------------------------ helpers


def heading_slug(heading: str) -> str:
    """The anchor of a heading: lower case, runs of non-word characters as ``-``."""
    return re.sub(r"[^\w]+", "-", heading.strip().lower()).strip("-")


def normalize_question(question: str) -> str:
    """A question's duplicate key: NFKC, case-folded, without spaces and punctuation."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", question).casefold())


def faq_id(question: str) -> str:
    """The default id of a FAQ entry: a stable hash of its (stripped) question."""
    return "faq-" + hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:12]


def _lines(text: str) -> list[str]:
    """Lines split at \\n, \\r\\n or \\r only (``str.splitlines`` also splits at U+2028
    and other characters that JSON strings may hold unescaped)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _squash(text: str) -> str:
    return " ".join(text.split())


def faq_entry_chunk(
    question: str,
    answer: str,
    *,
    category: str = "",
    language: str | None = None,
    source: str = RUNTIME_SOURCE,
    entry_id: str | None = None,
) -> Chunk:
    """The chunk of one FAQ entry, e.g. one added at runtime by ``flywheel kb add``.

    Raises ``DataError`` (``IngestError``) when the question or answer is empty.
    """
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        missing = "question" if not question else "answer"
        raise IngestError(f"a FAQ entry needs a non-empty {missing}, got {missing}=''")
    return make_chunk(
        kind="faq",
        source=source,
        anchor=(entry_id or "").strip() or faq_id(question),
        text=question,
        answer=answer,
        category=category.strip(),
        language=language or detect_language(question),
    )


def _read_text(path: Path, name: str, kind: str) -> str:
    """The UTF-8 text of ``path``; ``IngestError`` if empty, binary or not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {name}: {exc.strerror or exc}") from None
    if b"\x00" in data[:8192]:
        raise IngestError(f"{name} looks like a binary file (it contains NUL bytes), {kind}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IngestError(
            f"{name} is not UTF-8 text (undecodable byte at line {line}), {kind}"
        ) from None
    if not text.strip():
        raise IngestError(f"{name} is empty, {kind}")
    return text


# ------------------------------------------------------------------ FAQ files


def _faq_entry(raw: dict[str, object], name: str, line: int) -> FaqEntry:
    values: dict[str, str] = {}
    for key in FAQ_FIELDS:
        value = raw.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise IngestError(
                f"{name} line {line}: field {key!r} must be text, got {type(value).__name__}"
            )
        values[key] = str(value).strip()
    for key in ("question", "answer"):
        if not values[key]:
            state = "missing" if raw.get(key) is None else "empty"
            raise IngestError(
                f"{name} line {line}: {key} is {state}; every FAQ entry needs a question "
                "and an answer"
            )
    return FaqEntry(
        id=values["id"] or faq_id(values["question"]),
        question=values["question"],
        answer=values["answer"],
        category=values["category"],
        language=values["language"] or detect_language(values["question"]),
        source=name,
        line=line,
    )


def _read_faq_jsonl(text: str, name: str) -> list[FaqEntry]:
    entries = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(
                f"{name} line {number}: malformed JSON ({exc.msg} at column {exc.colno}); "
                "expected one JSON object per line"
            ) from None
        if not isinstance(raw, dict):
            raise IngestError(
                f"{name} line {number}: expected a JSON object with question and answer, "
                f"got {type(raw).__name__}"
            )
        entries.append(_faq_entry(raw, name, number))
    return entries


def _read_faq_csv(text: str, name: str) -> list[FaqEntry]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise IngestError(f"{name} line 1: malformed CSV ({exc})") from None
    columns = [h.strip().lower() for h in header]
    missing = [c for c in ("question", "answer") if c not in columns]
    if missing:
        raise IngestError(
            f"{name} line 1: header has no {' or '.join(missing)} column; expected columns "
            f"question,answer[,category,id,language], got {','.join(header)}"
        )
    entries = []
    start = reader.line_num
    try:
        for row in reader:
            line = start + 1
            start = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            raw = {col: row[i] if i < len(row) else None for i, col in enumerate(columns)}
            entries.append(_faq_entry(raw, name, line))
    except csv.Error as exc:
        raise IngestError(f"{name} line {reader.line_num}: malformed CSV ({exc})") from None
    return entries


def load_faq_file(path: Path, *, source: str | None = None) -> list[FaqEntry]:
    """The entries of a ``.jsonl`` or ``.csv`` FAQ file, in file order.

    ``source`` is the name used in entries and errors (default: the file name).
    """
    name = source or path.name
    kind = "expected FAQ entries with question and answer"
    text = _read_text(path, name, kind)
    if path.suffix.lower() == ".csv":
        entries = _read_faq_csv(text, name)
    else:
        entries = _read_faq_jsonl(text, name)
    if not entries:
        raise IngestError(f"{name} has no FAQ entries, {kind}")
    return entries


# ------------------------------------------------------------------ documents


class _Sections:
    """Collects (heading, body lines) pairs and gives them unique anchors per file."""

    def __init__(self) -> None:
        self.items: list[tuple[str, list[str]]] = [("", [])]

    def heading(self, title: str) -> None:
        self.items.append((_squash(title), []))

    def line(self, text: str) -> None:
        self.items[-1][1].append(text)

    def sections(self) -> list[Section]:
        used: Counter[str] = Counter()
        out = []
        for title, lines in self.items:
            body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
            slug = heading_slug(title) if title else ""
            if title and not slug:
                slug = "section"
            if slug:
                used[slug] += 1
                if used[slug] > 1:
                    slug = f"{slug}-{used[slug]}"
            if body:
                out.append(Section(title=title, anchor=slug, text=body))
        return out


_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|`)")


def parse_markdown(text: str) -> list[Section]:
    """Sections of a Markdown document at its ATX (``#``) headings; links become their
    text and emphasis marks are dropped. Headings inside code fences are text."""
    sections = _Sections()
    fenced = False
    for line in _lines(text):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _ATX.match(line)
        if match:
            sections.heading(_MD_EMPHASIS.sub("", match.group(2)))
        else:
            sections.line(_MD_EMPHASIS.sub("", _MD_LINK.sub(r"\1", line)).rstrip())
    return sections.sections()


_SETEXT = re.compile(r"^\s*(=+|-+)\s*$")


def parse_text_document(text: str) -> list[Section]:
    """Sections of a plain-text document at setext headings (a line underlined with
    ``===`` or ``---``); without them one section of paragraphs."""
    sections = _Sections()
    lines = _lines(text)
    i = 0
    while i < len(lines):
        line = lines[i]
        underline = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _SETEXT.match(underline) and len(underline.strip()) >= 3:
            sections.heading(line.strip())
            i += 2
            continue
        sections.line(line.rstrip())
        i += 1
    return sections.sections()


class _HtmlSections(HTMLParser):
    """Text of an HTML page cut at ``h1``-``h3``; block elements end lines."""

    HEADINGS = {"h1", "h2", "h3"}
    SKIP = {"script", "style", "head", "template", "noscript", "svg"}
    BLOCKS = {
        "p", "li", "td", "th", "dd", "dt", "div", "section", "article", "br", "tr",
        "pre", "blockquote", "h4", "h5", "h6", "ul", "ol", "table", "figcaption",
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = _Sections()
        self._skip = 0
        self._heading: list[str] | None = None
        self._line: list[str] = []

    def _flush(self) -> None:
        text = _squash("".join(self._line))
        if text:
            self.sections.line(text)
        self._line = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.HEADINGS:
            self._flush()
            self._heading = []
        elif tag in self.BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.HEADINGS and self._heading is not None:
            self.sections.heading("".join(self._heading))
            self._heading = None
        elif tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self._line.append(data)


def parse_html(text: str) -> list[Section]:
    """Sections of an HTML page at its ``h1``-``h3`` headings (stdlib parser)."""
    parser = _HtmlSections()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.sections.sections()


def document_sections(path: Path, *, source: str | None = None) -> list[Section]:
    """The sections of a Markdown, text or HTML document, by its suffix."""
    name = source or path.name
    suffix = path.suffix.lower()
    kind = {
        ".md": "expected a Markdown document",
        ".markdown": "expected a Markdown document",
        ".txt": "expected a text document",
        ".html": "expected an HTML document",
        ".htm": "expected an HTML document",
    }.get(suffix)
    if kind is None:
        raise IngestError(
            f"{name} is not a document; expected one of {', '.join(DOCUMENT_SUFFIXES)}"
        )
    text = _read_text(path, name, kind)
    if suffix in (".md", ".markdown"):
        sections = parse_markdown(text)
    elif suffix == ".txt":
        sections = parse_text_document(text)
    else:
        sections = parse_html(text)
    if not sections:
        raise IngestError(f"{name} has no text, {kind}")
    return sections


def load_document(
    path: Path,
    *,
    source: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """The chunks of one document; ``source`` (default the file name) is their citation."""
    name = source or path.name
    sections = document_sections(path, source=name)
    return chunk_sections(sections, source=name, max_chars=max_chars, overlap=overlap)


# ------------------------------------------------------------------ the whole base


def _is_faq(path: Path) -> bool:
    return path.suffix.lower() in FAQ_SUFFIXES and not path.name.lower().startswith("eval")


def _is_document(path: Path) -> bool:
    return path.suffix.lower() in DOCUMENT_SUFFIXES and path.name.lower() != "readme.md"


def knowledge_files(path: Path) -> list[tuple[Path, str]]:
    """(file, source name) pairs a path contributes, by the rule in the module docstring."""
    if path.is_file():
        if path.suffix.lower() not in FAQ_SUFFIXES + DOCUMENT_SUFFIXES:
            raise IngestError(
                f"{path} is neither a FAQ file ({', '.join(FAQ_SUFFIXES)}) nor a document "
                f"({', '.join(DOCUMENT_SUFFIXES)})"
            )
        return [(path, path.name)]
    if not path.is_dir():
        raise IngestError(f"knowledge base {path} does not exist; expected a folder or file")
    found = []
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not file.is_file():
            continue
        if _is_faq(file) or _is_document(file):
            found.append((file, rel.as_posix()))
    return found


def _add_faq_entries(
    entries: list[FaqEntry],
    kept: dict[str, FaqEntry],
    ids: dict[str, FaqEntry],
    report: KnowledgeBaseReport,
) -> list[FaqEntry]:
    """Entries not already present; duplicates counted or reported against ``kept``."""
    fresh = []
    for entry in entries:
        key = normalize_question(entry.question) or entry.question
        first = kept.get(key)
        if first is not None:
            if _squash(first.answer) == _squash(entry.answer):
                report.exact_duplicates += 1
            else:
                report.problems.append(
                    f"{entry.source} line {entry.line} asks the same question as "
                    f"{first.source} line {first.line} ({first.question!r}) with a different "
                    f"answer; kept line {first.line}"
                )
            continue
        other = ids.get(entry.id)
        if other is not None:
            report.problems.append(
                f"{entry.source} line {entry.line} reuses id {entry.id!r} of {other.source} "
                f"line {other.line}; kept line {other.line}"
            )
            continue
        kept[key] = entry
        ids[entry.id] = entry
        fresh.append(entry)
    return fresh


def load_knowledge_base(
    path: Path | Sequence[Path],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> KnowledgeBase:
    """Load FAQ files and documents from a folder, a file, or several of them.

    Sources are relative to the folder they were found in (posix separators), or the
    file name for a file named directly. Raises ``IngestError`` for unreadable input
    or when nothing is found.
    """
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    report = KnowledgeBaseReport()
    faq_chunks: list[Chunk] = []
    doc_chunks: list[Chunk] = []
    kept: dict[str, FaqEntry] = {}
    ids: dict[str, FaqEntry] = {}
    seen_docs: set[str] = set()
    for root in paths:
        files = knowledge_files(root)
        if not files:
            raise IngestError(
                f"no FAQ or document files under {root}; expected *.jsonl/*.csv FAQ files "
                f"or {'/'.join(DOCUMENT_SUFFIXES)} documents"
            )
        for file, source in files:
            if file.suffix.lower() in FAQ_SUFFIXES:
                entries = load_faq_file(file, source=source)
                report.faq_files.append(source)
                for entry in _add_faq_entries(entries, kept, ids, report):
                    faq_chunks.append(
                        faq_entry_chunk(
                            entry.question,
                            entry.answer,
                            category=entry.category,
                            language=entry.language,
                            source=entry.source,
                            entry_id=entry.id,
                        )
                    )
            else:
                report.documents.append(source)
                for chunk in load_document(
                    file, source=source, max_chars=max_chars, overlap=overlap
                ):
                    if chunk.id not in seen_docs:
                        seen_docs.add(chunk.id)
                        doc_chunks.append(chunk)
    report.faq_entries = len(faq_chunks)
    report.document_chunks = len(doc_chunks)
    chunks = faq_chunks + doc_chunks
    report.languages = dict(Counter(c.language for c in chunks))
    return KnowledgeBase(chunks=chunks, report=report)
