"""A zh/en glossary learned from the knowledge base's aligned pairs, to normalize mixed
questions ("refund 多久到账？", "我想 change 我的 phone number") for both retrievers.

``Glossary.from_chunks`` pairs the knowledge base's own translations: FAQ entries whose
ids differ only in the language suffix (``ship-01-zh`` / ``ship-01-en``), and the
sections of a document's zh and en versions (``returns.zh.md`` / ``returns.en.md``) in
reading order. Over those pairs, an English word and a Chinese word are each other's
translation when they co-occur in pairs more than they appear apart: the Dice
coefficient of the pairs that contain them reaches ``min_dice`` and they share at least
``min_pairs`` pairs. Each word keeps its best partner.

``Glossary.normalize``: a message in one language with words of the other gets the
translations of those words appended, so BM25 finds the terms of the message's language
and the dense encoder reads both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aiflywheel.tasks.assistant.types import Chunk

_HAN = re.compile(r"[\u3400-\u9fff]")
_EN_WORD = re.compile(r"[a-z][a-z0-9'-]+")
_ZH_SUFFIX = re.compile(r"[-_.](zh|en)(?=$|[-_.])")


def _pair_key(chunk: Chunk) -> tuple[str, str] | None:
    """(key shared by both translations, language) or ``None``."""
    if chunk.kind == "faq":
        match = re.search(r"-(zh|en)$", chunk.anchor)
        if match:
            return f"faq:{chunk.anchor[: match.start()]}", match.group(1)
        return None
    match = _ZH_SUFFIX.search(chunk.source)
    if not match:
        return None
    return f"doc:{chunk.source[: match.start()]}", match.group(1)


def aligned_pairs(chunks: Sequence[Chunk]) -> list[tuple[str, str]]:
    """(zh text, en text) of the knowledge base's translated FAQ entries and sections."""
    zh: dict[str, list[str]] = {}
    en: dict[str, list[str]] = {}
    for chunk in chunks:
        key = _pair_key(chunk)
        if key is None:
            continue
        (zh if key[1] == "zh" else en).setdefault(key[0], []).append(chunk.passage)
    pairs = []
    for key, zh_texts in zh.items():
        en_texts = en.get(key, [])
        if len(en_texts) == len(zh_texts):
            pairs.extend(zip(zh_texts, en_texts, strict=True))
    return pairs


def _zh_words(text: str) -> set[str]:
    from aiflywheel.tasks.assistant.bm25 import bm25_tokens

    return {t for t in bm25_tokens(text) if _HAN.search(t) and len(t) >= 2}


def _en_words(text: str) -> set[str]:
    from aiflywheel.tasks.assistant.bm25 import bm25_tokens

    return {t for t in bm25_tokens(text) if _EN_WORD.fullmatch(t) and len(t) >= 3}


@dataclass(frozen=True)
class Glossary:
    """English word (BM25 form) -> Chinese word, and back."""

    en_to_zh: dict[str, str]
    zh_to_en: dict[str, str]

    @classmethod
    def from_chunks(
        cls, chunks: Sequence[Chunk], *, min_dice: float = 0.5, min_pairs: int = 2
    ) -> Glossary:
        pairs = [(_zh_words(z), _en_words(e)) for z, e in aligned_pairs(chunks)]
        zh_df: dict[str, int] = {}
        en_df: dict[str, int] = {}
        both: dict[tuple[str, str], int] = {}
        for zh_words, en_words in pairs:
            for z in zh_words:
                zh_df[z] = zh_df.get(z, 0) + 1
            for e in en_words:
                en_df[e] = en_df.get(e, 0) + 1
            for e in en_words:
                for z in zh_words:
                    both[(e, z)] = both.get((e, z), 0) + 1
        best_en: dict[str, tuple[float, str]] = {}
        best_zh: dict[str, tuple[float, str]] = {}
        for (e, z), n in sorted(both.items()):  # sorted: ties break the same way every run
            if n < min_pairs:
                continue
            dice = 2 * n / (en_df[e] + zh_df[z])
            if dice < min_dice:
                continue
            if dice > best_en.get(e, (0.0, ""))[0]:
                best_en[e] = (dice, z)
            if dice > best_zh.get(z, (0.0, ""))[0]:
                best_zh[z] = (dice, e)
        return cls({e: z for e, (_, z) in best_en.items()}, {z: e for z, (_, e) in best_zh.items()})

    def normalize(self, text: str) -> str:
        """``text`` with the translations of its other-language words appended (unchanged
        when it is in one language only or no word is in the glossary)."""
        from aiflywheel.tasks.assistant.bm25 import bm25_tokens

        han = bool(_HAN.search(text))
        latin = bool(re.search(r"[A-Za-z]{3,}", text))
        if not (han and latin):
            return text
        zh_share = len(_HAN.findall(text)) / max(1, sum(ch.isalpha() for ch in text))
        added: list[str] = []
        for token in bm25_tokens(text):
            if zh_share >= 0.2 and token in self.en_to_zh:
                added.append(self.en_to_zh[token])
            elif zh_share < 0.2 and token in self.zh_to_en:
                added.append(self.zh_to_en[token])
        added = [a for a in dict.fromkeys(added) if a not in text]
        return f"{text} {' '.join(added)}" if added else text


__all__ = ["Glossary", "aligned_pairs"]
