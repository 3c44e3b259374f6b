"""Splitting text into tokens per side, and the vocabulary that numbers them.

Chinese and Japanese are split into characters: words are not marked by spaces, and a
character vocabulary of a few thousand covers almost every text, so no segmenter is needed
and unknown words still decode. Other languages are split into words and punctuation
(contractions kept whole): an English target of words needs far fewer decoding steps than
one of characters, which matters for a small LSTM trained on a CPU in minutes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
SPACE = "\u2581"  # a space inside a character-split text
CHAR_LANGUAGES = ("zh", "ja", "yue", "wuu")
_WORDS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_GLUE_LEFT = re.compile(r" ([,.;:!?%)\]}’”])")
_GLUE_RIGHT = re.compile(r"([(\[{“‘$¥]) ")


def mode_for(language: str, declared: str) -> str:
    """'char' or 'word' for a side in ``language`` ('auto' decides by the language)."""
    if declared != "auto":
        return declared
    return "char" if language.split("-")[0].lower() in CHAR_LANGUAGES else "word"


def split(text: str, mode: str) -> list[str]:
    if mode == "char":
        return [SPACE if ch.isspace() else ch for ch in " ".join(text.split())]
    return _WORDS.findall(text)


def join(tokens: Sequence[str], mode: str) -> str:
    if mode == "char":
        return "".join(tokens).replace(SPACE, " ").strip()
    text = " ".join(tokens)
    text = _GLUE_RIGHT.sub(r"\1", _GLUE_LEFT.sub(r"\1", text))
    return text.replace(" ' ", "'").strip()


class Vocabulary:
    """Token <-> id; ids 0-3 are <pad>, <unk>, <s>, </s>."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[list[str]], max_size: int) -> Vocabulary:
        counts: Counter[str] = Counter()
        for tokens in texts:
            counts.update(tokens)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([*SPECIALS, *(t for t, _ in ranked[: max(0, max_size - len(SPECIALS))])])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            if i == self.index[EOS]:
                break
            if i >= len(SPECIALS):
                out.append(self.tokens[i])
        return out
