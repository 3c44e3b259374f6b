"""The cheap baseline every model is measured against: TF-IDF + logistic regression.

Character 1-3-grams when the training texts are mostly Chinese (no word boundaries),
word 1-2-grams otherwise. Saved as JSON (vocabulary) and safetensors (weights).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aiflywheel.data.language import language_mix
from aiflywheel.errors import require_module
from aiflywheel.files import write_arrays_atomic, write_text_atomic
from aiflywheel.tasks.text_classification.models.base import (
    ClassifierBase,
    check_texts,
    read_manifest,
)

_SKLEARN = "pip install 'aiflywheel[train]'"


def choose_analyzer(texts: Sequence[str]) -> str:
    """'char' when at least 30% of texts are Chinese or mixed, else 'word'."""
    mix = language_mix(texts)
    total = sum(mix.values()) or 1
    return "char" if (mix["zh"] + mix["mixed"]) / total >= 0.3 else "word"


class TfidfBaseline(ClassifierBase):
    """TF-IDF features + class-weighted logistic regression."""

    kind = "tfidf"

    def __init__(self, *, analyzer: str | None = None, C: float = 4.0, seed: int = 0) -> None:
        self.analyzer = analyzer
        self.C = C
        self.seed = seed
        self.labels: list[str] = []

    @property
    def name(self) -> str:
        grams = "char(1-3)" if self.analyzer == "char" else "word(1-2)"
        return f"tfidf-{grams}+logreg"

    def _vectorizer(self, vocabulary: dict[str, int] | None = None):
        text = require_module(
            "sklearn.feature_extraction.text", what="the TF-IDF baseline", install=_SKLEARN
        )
        if self.analyzer == "char":
            return text.TfidfVectorizer(
                analyzer="char",
                ngram_range=(1, 3),
                min_df=2,
                sublinear_tf=True,
                max_features=300_000,
                vocabulary=vocabulary,
            )
        return text.TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, 2),
            min_df=2,
            sublinear_tf=True,
            lowercase=True,
            token_pattern=r"(?u)\b\w+\b",
            max_features=300_000,
            vocabulary=vocabulary,
        )

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TfidfBaseline:
        linear = require_module(
            "sklearn.linear_model", what="the TF-IDF baseline", install=_SKLEARN
        )
        texts = check_texts(texts)
        y = self._set_labels(labels)
        if self.analyzer is None:
            self.analyzer = choose_analyzer(texts)
        self.vectorizer_ = self._vectorizer()
        features = self.vectorizer_.fit_transform(texts)
        self.model_ = linear.LogisticRegression(
            C=self.C, max_iter=2000, class_weight="balanced", random_state=self.seed
        )
        self.model_.fit(features, y)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._require_fitted()
        features = self.vectorizer_.transform(check_texts(texts))
        return self.model_.predict_proba(features)

    def save(self, directory: str | Path) -> None:
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocabulary = {term: int(i) for term, i in self.vectorizer_.vocabulary_.items()}
        write_text_atomic(directory / "vocabulary.json", json.dumps(vocabulary, ensure_ascii=False))
        write_arrays_atomic(
            directory / "weights.safetensors",
            {
                "idf": self.vectorizer_.idf_.astype(np.float64),
                "coef": self.model_.coef_.astype(np.float64),
                "intercept": self.model_.intercept_.astype(np.float64),
            },
        )
        self._write_manifest(directory, analyzer=self.analyzer, C=self.C, name=self.name)

    @classmethod
    def load(cls, directory: str | Path) -> TfidfBaseline:
        from safetensors.numpy import load_file

        linear = require_module(
            "sklearn.linear_model", what="the TF-IDF baseline", install=_SKLEARN
        )
        directory = Path(directory)
        manifest = read_manifest(directory)
        model = cls(analyzer=manifest["analyzer"], C=manifest["C"])
        model.labels = list(manifest["labels"])
        vocabulary = json.loads((directory / "vocabulary.json").read_text(encoding="utf-8"))
        weights = load_file(str(directory / "weights.safetensors"))
        model.vectorizer_ = model._vectorizer(vocabulary)
        model.vectorizer_.idf_ = weights["idf"]
        model.model_ = linear.LogisticRegression()
        model.model_.coef_ = weights["coef"]
        model.model_.intercept_ = weights["intercept"]
        model.model_.classes_ = np.arange(len(model.labels))
        return model
