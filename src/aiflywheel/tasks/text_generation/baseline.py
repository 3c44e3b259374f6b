"""The nearest-neighbour response baseline: the training prompt most similar to a new
prompt (cosine over TF-IDF character 1-3 grams, which covers Chinese and English alike)
gives its response. Saved as JSON (the training pairs), refit on load."""

from __future__ import annotations

import json
from pathlib import Path

from aiflywheel.errors import ModelError, NotFittedError
from aiflywheel.files import write_json_atomic

FILE = "nearest_neighbour.json"


class NearestResponse:
    """``fit(prompts, responses) -> self``; ``predict(prompts)`` the neighbours' responses."""

    name = "nearest-neighbour"

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.responses: list[str] = []
        self._vectorizer = None
        self._matrix = None

    def fit(self, prompts: list[str], responses: list[str]) -> NearestResponse:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not prompts or len(prompts) != len(responses):
            raise ModelError(
                f"the nearest-neighbour baseline needs as many prompts as responses (at least "
                f"one), got {len(prompts)} and {len(responses)}"
            )
        self.prompts, self.responses = list(prompts), list(responses)
        self._vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True
        )
        self._matrix = self._vectorizer.fit_transform(self.prompts)
        return self

    def nearest(self, prompts: list[str]) -> list[int]:
        if self._vectorizer is None:
            raise NotFittedError("the nearest-neighbour baseline is not fitted")
        scores = self._vectorizer.transform(prompts) @ self._matrix.T
        return [int(row.toarray().argmax()) for row in scores]

    def predict(self, prompts: list[str]) -> list[str]:
        return [self.responses[i] for i in self.nearest(prompts)]

    def save(self, folder: Path) -> None:
        if self._vectorizer is None:
            raise NotFittedError("the nearest-neighbour baseline is not fitted")
        write_json_atomic(
            Path(folder) / FILE, {"prompts": self.prompts, "responses": self.responses}
        )

    @classmethod
    def load(cls, folder: Path) -> NearestResponse:
        data = json.loads((Path(folder) / FILE).read_text(encoding="utf-8"))
        return cls().fit(data["prompts"], data["responses"])
