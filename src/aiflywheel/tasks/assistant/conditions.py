"""Answers that keep their conditions: the entities a knowledge base treats specially, and
the passage an answer about one of them must come from.

``EntityLexicon.from_chunks`` builds the lexicon from the knowledge base itself, no list
written for it: in English text, capitalized names that do not start a sentence ("Tibet",
"Hong Kong", "Platinum", "UnionPay"); in Chinese text, the words jieba tags as place,
organization or other proper names ("西藏", "香港", "金卡", "支付宝"). A name found in
more than ``max_share`` of the chunks is common ground ("China", "中国"), not an entity
a rule makes an exception for, and is left out.

``entity_passage``: when the question names entities that the answer does not mention
(the answer states a rule without saying what holds for them) and a retrieved passage
does mention them, the answer must come from that passage: the whole passage when it is
short, else its sentences that name the entities. When no retrieved passage mentions
them, the passages do not treat them specially and the answer stands.

``titled_passage``: when the answer's passage names the entity only in passing ("we
deliver to ... Hong Kong ...") and a retrieved passage is about it (its heading or FAQ
question names it: "Hong Kong, Macau and Taiwan"), the answer comes from that passage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiflywheel.tasks.assistant.grounding import split_sentences
from aiflywheel.tasks.assistant.types import Chunk

# Capitalized words (or runs of them); those that start a sentence, a line or a list item
# are skipped (see ``_names``).
_EN_NAME = re.compile(r"\b[A-Z][a-zA-Z]+(?:[ ][A-Z][a-zA-Z]+)*")
_STARTS = ".!?:>*#-\n([（"
_ZH_TAGS = frozenset({"ns", "nt", "nz", "nr", "nrt"})
_HAN = re.compile(r"[\u3400-\u9fff]")
EN_NOT_NAMES = frozenset(
    [
        "I",
        "If",
        "It",
        "The",
        "This",
        "That",
        "These",
        "Those",
        "We",
        "You",
        "Your",
        "Our",
        "My",
        "Me",
        "For",
        "And",
        "Or",
        "But",
        "When",
        "Where",
        "What",
        "How",
        "Why",
        "Who",
        "Which",
        "Yes",
        "No",
        "Not",
        "Please",
        "Orders",
        "Order",
        "Tap",
        "Go",
        "Open",
        "Choose",
        "Select",
        "Click",
    ]
)
# An answer shorter than this is given whole when it is the passage an entity needs.
WHOLE_PASSAGE_CHARS = 600


def _body(chunk: Chunk) -> str:
    return chunk.answer if chunk.kind == "faq" else chunk.text


@dataclass(frozen=True)
class EntityLexicon:
    """Names (lower case) the knowledge base mentions in a few of its chunks."""

    names: frozenset[str]

    @classmethod
    def from_chunks(cls, chunks: Sequence[Chunk], *, max_share: float = 0.05) -> EntityLexicon:
        counts: dict[str, int] = {}
        for chunk in chunks:
            for name in set(_names(_body(chunk))):
                counts[name] = counts.get(name, 0) + 1
        limit = max(2, int(max_share * len(chunks)))
        # an English name must never appear in lower case ("Returns" in a heading is not one)
        lowered = " ".join(_body(c) for c in chunks if not _HAN.search(_body(c)))
        return cls(
            frozenset(
                n
                for n, c in counts.items()
                if c <= limit and not (n.isascii() and _mentions_case(lowered, n))
            )
        )

    def find(self, text: str) -> list[str]:
        """The lexicon's names that ``text`` mentions (longest first, none inside another)."""
        low = text.lower()
        found: list[str] = []
        for name in sorted(self.names, key=lambda n: (-len(n), n)):
            if _mentions(low, name) and not any(name in f for f in found):
                found.append(name)
        return found


def _mentions_case(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def _names(text: str) -> Iterable[str]:
    for match in _EN_NAME.finditer(text):
        before = text[: match.start()].rstrip(" ")
        if not before or before[-1] in _STARTS:
            continue
        words = match.group().split()
        while words and words[0] in EN_NOT_NAMES:
            words = words[1:]
        if words and len(" ".join(words)) > 2:
            yield " ".join(words).lower()
    if _HAN.search(text):
        import jieba.posseg

        for word, tag in jieba.posseg.cut(text):
            if tag in _ZH_TAGS and len(word) >= 2 and _HAN.search(word):
                yield word


def _mentions(low_text: str, name: str) -> bool:
    if name.isascii():
        return re.search(rf"\b{re.escape(name)}\b", low_text) is not None
    return name in low_text


def missing_entities(lexicon: EntityLexicon, question: str, answer: str) -> list[str]:
    """The lexicon's names the question mentions and the answer does not (names in the
    other script than the answer's are skipped: a Chinese answer cannot name "Tibet")."""
    low = answer.lower()
    answer_zh = bool(_HAN.search(answer))
    missing = []
    for name in lexicon.find(question):
        if name.isascii() == answer_zh:
            continue
        if not _mentions(low, name):
            missing.append(name)
    return missing


@dataclass(frozen=True)
class EntityPassage:
    """The passage (1-based position among the candidates) and the text to answer with."""

    position: int
    chunk: Chunk
    text: str


def entity_passage(
    names: Sequence[str], candidates: Sequence[Chunk], *, language: str
) -> EntityPassage | None:
    """The first candidate (in the answer's language) whose body mentions every name, with
    the text to answer with (see the module docstring); ``None`` when none does."""
    if not names:
        return None
    for position, chunk in enumerate(candidates, start=1):
        if language and chunk.language and chunk.language != language:
            continue
        body = _body(chunk)
        low = body.lower()
        if not all(_mentions(low, n) for n in names):
            continue
        if len(body) <= WHOLE_PASSAGE_CHARS:
            return EntityPassage(position, chunk, body.strip())
        sentences = [
            s for s in split_sentences(body) if any(_mentions(s.lower(), n) for n in names)
        ]
        joiner = "" if _HAN.search(body) else " "
        return EntityPassage(position, chunk, joiner.join(s.strip() for s in sentences))
    return None


def _heading(chunk: Chunk) -> str:
    return chunk.text if chunk.kind == "faq" else chunk.title


def titled_passage(
    names: Sequence[str],
    candidates: Sequence[Chunk],
    answered_from: Sequence[Chunk],
    *,
    language: str,
) -> EntityPassage | None:
    """A candidate about the question's entities (its heading or FAQ question names one
    of them, in the answer's language) when the passages the answer comes from are not
    (their headings name none): the answer should come from it. ``None`` otherwise."""
    usable = [n for n in names if n.isascii() != (language == "zh")]
    if not usable or any(_mentions(_heading(c).lower(), n) for c in answered_from for n in usable):
        return None
    for position, chunk in enumerate(candidates, start=1):
        if language and chunk.language and chunk.language != language:
            continue
        heading = _heading(chunk).lower()
        about = [n for n in usable if _mentions(heading, n)]
        if about:
            body = _body(chunk)
            if len(body) <= WHOLE_PASSAGE_CHARS:
                return EntityPassage(position, chunk, body.strip())
            found = entity_passage(about, [chunk], language=language)
            return EntityPassage(position, chunk, found.text) if found else None
    return None


__all__ = [
    "EntityLexicon",
    "EntityPassage",
    "WHOLE_PASSAGE_CHARS",
    "entity_passage",
    "missing_entities",
    "titled_passage",
]
