"""The two baselines a translator must beat, on the same test pairs.

* ``CopyBaseline``: the output is the input. Strong for rewriting and normalization, where
  most of a text stays; near zero for translation between scripts (it shows what chrF
  gives for free).
* ``DictionaryBaseline``: a phrase table learned from the training pairs: the whole source
  when it was seen, else a greedy longest-match segmentation of the source into seen
  sources, each replaced by its most frequent target (unmatched tokens are copied).
  Word-by-word dictionary translation, what a bilingual glossary gives without a model.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from aiflywheel.errors import ModelError, NotFittedError
from aiflywheel.files import write_json_atomic
from aiflywheel.tasks.text_to_text.tokens import join, split

DICTIONARY_FILE = "dictionary.json"


class CopyBaseline:
    name = "copy"

    def fit(self, sources: Sequence[str], targets: Sequence[str]) -> CopyBaseline:
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        return list(texts)


class DictionaryBaseline:
    name = "dictionary"

    def __init__(self, *, source_mode: str = "char", target_mode: str = "word") -> None:
        self.source_mode = source_mode
        self.target_mode = target_mode
        self.table: dict[str, str] | None = None
        self.longest = 0

    def _key(self, tokens: Sequence[str]) -> str:
        return "\u0001".join(tokens)

    def fit(self, sources: Sequence[str], targets: Sequence[str]) -> DictionaryBaseline:
        seen: dict[str, Counter[str]] = defaultdict(Counter)
        for source, target in zip(sources, targets, strict=True):
            seen[self._key(split(source, self.source_mode))][target] += 1
        self.table = {k: c.most_common(1)[0][0] for k, c in seen.items()}
        self.longest = max((k.count("\u0001") + 1 for k in self.table), default=0)
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self.table is None:
            raise NotFittedError("DictionaryBaseline: call fit (or load) before predict")
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> str:
        assert self.table is not None
        tokens = split(text, self.source_mode)
        whole = self.table.get(self._key(tokens))
        if whole is not None:
            return whole
        pieces: list[str] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self.longest, len(tokens) - i), 0, -1):
                found = self.table.get(self._key(tokens[i : i + n]))
                if found is not None:
                    pieces.append(found)
                    i += n
                    break
            else:
                pieces.append(join(tokens[i : i + 1], self.source_mode))
                i += 1
        glue = "" if self.target_mode == "char" else " "
        return glue.join(p for p in pieces if p.strip())

    def save(self, folder: str | Path) -> Path:
        if self.table is None:
            raise NotFittedError("DictionaryBaseline: call fit before save")
        folder = Path(folder)
        write_json_atomic(
            folder / DICTIONARY_FILE,
            {
                "source_mode": self.source_mode,
                "target_mode": self.target_mode,
                "table": self.table,
            },
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DictionaryBaseline:
        path = Path(folder) / DICTIONARY_FILE
        if not path.is_file():
            raise ModelError(f"{folder} holds no dictionary baseline ({DICTIONARY_FILE} missing)")
        data = json.loads(path.read_text(encoding="utf-8"))
        model = cls(source_mode=data["source_mode"], target_mode=data["target_mode"])
        model.table = data["table"]
        model.longest = max((k.count("\u0001") + 1 for k in model.table), default=0)
        return model
