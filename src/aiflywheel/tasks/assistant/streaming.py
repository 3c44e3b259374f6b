"""Pieces of an answer for a stream: clauses, cut to a few words.

Answers that no model generates token by token (quoted passage sentences, curated FAQ
answers, handoff texts) are streamed in the pieces ``stream_pieces`` cuts them into, so
an API client shows them appearing like a generated answer. The cut is lossless:
``"".join(stream_pieces(text)) == text`` for every text.

A piece ends after clause punctuation (``, ; : . ! ?`` and their full-width forms,
``、``) or once it holds ``words`` words; Chinese text, written without spaces, counts
``chars`` characters as the words' worth.
"""

from __future__ import annotations

import re

# a word with the spaces after it, or a run of spaces at the start
_UNIT = re.compile(r"\S+\s*|\s+")
# a run of CJK text up to and including a clause mark, or the rest of it
_MARKS = "，。；！？：、,;!?"
_CJK_CLAUSE = re.compile(rf"[^{_MARKS}]*[{_MARKS}]+\s*|[^{_MARKS}]+\s*")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_CLAUSE_END = re.compile(r"[，。；！？：、,;:.!?\]）)]\s*$")

DEFAULT_WORDS = 4
DEFAULT_CHARS = 10


def _units(text: str, chars: int) -> list[str]:
    """Words with their trailing spaces; a CJK run is cut at clause marks and every
    ``chars`` characters."""
    units: list[str] = []
    for match in _UNIT.finditer(text):
        word = match.group()
        if len(word) <= chars or not _HAN.search(word):
            units.append(word)
            continue
        for clause in _CJK_CLAUSE.findall(word):
            units.extend(clause[i : i + chars] for i in range(0, len(clause), chars))
    return units


def stream_pieces(
    text: str, *, words: int = DEFAULT_WORDS, chars: int = DEFAULT_CHARS
) -> list[str]:
    """``text`` cut into stream pieces (see the module docstring); ``[]`` for ``""``."""
    if words < 1 or chars < 1:
        raise ValueError(f"words and chars must be at least 1, got {words} and {chars}")
    pieces: list[str] = []
    current, count = "", 0
    for unit in _units(text, chars):
        current += unit
        count += 1
        if count >= words or _CLAUSE_END.search(unit) or (_HAN.search(unit) and len(unit) >= chars):
            pieces.append(current)
            current, count = "", 0
    if current:
        pieces.append(current)
    return pieces


__all__ = ["stream_pieces"]
