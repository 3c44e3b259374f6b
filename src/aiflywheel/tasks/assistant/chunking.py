"""Splitting document sections into overlapping, citable chunks.

A document is first cut into ``Section``s (one per heading, see ``knowledge_base``);
each section's text is then split into chunks of at most ``max_chars`` characters that
end at a sentence end (``。！？.!?`` or a line break) where one lies in the second half
of the window, else at a space, else mid-text. Consecutive chunks overlap by up to
``overlap`` characters (moved forward to a word start) so that a sentence cut at a
boundary is still whole in one of them.

The default of 350 characters is about 80-100 English words or 350 Chinese characters:
a paragraph, which keeps a chunk on one topic for retrieval and lets five chunks fit a
small generator's prompt. Chunk ids hash every field of the chunk, so an unchanged
chunk keeps its id across rebuilds and the index can be updated incrementally.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from aiflywheel.data.language import detect_language
from aiflywheel.tasks.assistant.types import Chunk, ChunkKind

DEFAULT_MAX_CHARS = 350
DEFAULT_OVERLAP = 60

# A sentence ends after CJK end punctuation, after Latin end punctuation followed by
# a space, or at a line break. The match's end is the boundary.
_SENTENCE_END = re.compile(r"[。！？；]+[」』”’)）]*|[.!?]+[\"')\]]*(?=\s|$)|\n")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Section:
    """A titled part of a document: its heading, the heading's anchor slug, its body text."""

    title: str
    anchor: str
    text: str


def chunk_id(
    *,
    kind: ChunkKind,
    source: str,
    anchor: str,
    text: str,
    title: str = "",
    answer: str = "",
    category: str = "",
    language: str = "",
) -> str:
    """A stable id: the hash of every field of the chunk (changes when any of them does)."""
    parts = (kind, source, anchor, title, text, answer, category, language)
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{kind}-{digest[:16]}"


def make_chunk(
    *,
    kind: ChunkKind,
    source: str,
    anchor: str,
    text: str,
    title: str = "",
    answer: str = "",
    category: str = "",
    language: str = "",
) -> Chunk:
    """A ``Chunk`` whose id is ``chunk_id`` of its fields."""
    fields = dict(
        kind=kind,
        source=source,
        anchor=anchor,
        text=text,
        title=title,
        answer=answer,
        category=category,
        language=language,
    )
    return Chunk(id=chunk_id(**fields), **fields)


def _boundary(text: str, start: int, end: int) -> int:
    """Where to end a chunk that starts at ``start`` and may run to ``end`` (exclusive).

    The last sentence end in the second half of the window, else the last whitespace
    there, else ``end``.
    """
    low = start + (end - start) // 2
    best = -1
    for match in _SENTENCE_END.finditer(text, low):
        if match.end() > end:
            break
        best = match.end()
    if best > low:
        return best
    for pos in range(end - 1, low, -1):
        if text[pos].isspace():
            return pos + 1
    return end


def _overlap_start(text: str, end: int, overlap: int, floor: int) -> int:
    """Where the next chunk starts: ``overlap`` characters before ``end``, moved forward
    to the start of a word (after a space, or at a CJK character) if one lies before
    ``end``, and never at or before ``floor`` (the previous start)."""
    start = max(end - overlap, floor + 1)
    for pos in range(start, end):
        word_start = pos == 0 or text[pos - 1].isspace() or _CJK.match(text[pos])
        if word_start and not text[pos].isspace():
            return pos
    return end


def split_text(
    text: str, *, max_chars: int = DEFAULT_MAX_CHARS, overlap: int = DEFAULT_OVERLAP
) -> list[str]:
    """``text`` cut into pieces of at most ``max_chars`` characters (stripped), ending at
    sentence ends where possible, consecutive pieces overlapping by up to ``overlap``."""
    if max_chars < 20:
        raise ValueError(f"max_chars must be at least 20, got {max_chars}")
    if not 0 <= overlap < max_chars // 2:
        raise ValueError(f"overlap must be in [0, max_chars / 2), got {overlap}")
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            end = _boundary(text, start, end)
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        if end >= len(text):
            break
        start = _overlap_start(text, end, overlap, start) if overlap else end
    return pieces


def chunk_sections(
    sections: Iterable[Section],
    *,
    source: str,
    language: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """Document chunks for ``sections`` of the file ``source``.

    Each chunk keeps its section's heading as ``title`` and the heading's slug as
    ``anchor``; ``language`` is given, or detected per section. Identical chunks (same
    source, anchor and text) are kept once.
    """
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for section in sections:
        lang = language or detect_language(f"{section.title}\n{section.text}")
        for piece in split_text(section.text, max_chars=max_chars, overlap=overlap):
            chunk = make_chunk(
                kind="doc",
                source=source,
                anchor=section.anchor,
                title=section.title,
                text=piece,
                language=lang,
            )
            if chunk.id not in seen:
                seen.add(chunk.id)
                chunks.append(chunk)
    return chunks
