"""Method ``stacked``: TF-IDF log-probabilities + encoder embeddings -> logistic regression.

The TF-IDF model sees words the encoder truncates away or underweights; the encoder
sees meaning the n-grams miss. The stacking head learns on *out-of-fold* TF-IDF
log-probabilities of the training rows (each row scored by a TF-IDF model that did not
see it), so it does not learn to trust the TF-IDF column more than it deserves on new
text; at prediction time the TF-IDF model fit on every training row is used. The
regularization strength is chosen on the validation split.

Saved as ``baseline/`` (the TF-IDF model: JSON vocabulary + safetensors), ``head.safetensors``
and ``classifier.json``; no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aiflywheel.errors import ModelError, require_module
from aiflywheel.files import write_arrays_atomic
from aiflywheel.tasks.text_classification.models.base import (
    ClassifierBase,
    check_texts,
    macro_f1_of_codes,
    read_manifest,
)
from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline
from aiflywheel.tasks.text_classification.models.encoding import TRAIN_EXTRA, TextEncoder

_C_GRID = (0.25, 1.0, 4.0, 16.0)
DEFAULT_FOLDS = 5
LOG_FLOOR = 1e-6


def linear_proba(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Softmax of a logistic-regression head (one logit column for two classes)."""
    logits = x @ coef.T + intercept
    if logits.shape[1] == 1:
        logits = np.hstack([-logits / 2, logits / 2])
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def out_of_fold_log_proba(
    texts: Sequence[str], y: np.ndarray, n_labels: int, *, folds: int, seed: int, analyzer: str
) -> np.ndarray:
    """Log-probabilities of every training row from a TF-IDF model that did not see it."""
    selection = require_module(
        "sklearn.model_selection", what="method stacked", install=TRAIN_EXTRA
    )
    counts = np.bincount(y, minlength=n_labels)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise ModelError(
            f"method stacked needs at least 2 training rows of every label, got {counts.tolist()}"
        )
    out = np.zeros((len(texts), n_labels), dtype=np.float64)
    splitter = selection.StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    texts = list(texts)
    for fit_rows, held in splitter.split(np.zeros(len(y)), y):
        model = TfidfBaseline(analyzer=analyzer, seed=seed)
        model.fit([texts[i] for i in fit_rows], [str(int(c)) for c in y[fit_rows]])
        proba = model.predict_proba([texts[i] for i in held])
        columns = [int(name) for name in model.labels]
        out[np.ix_(held, columns)] = proba
        missing = [c for c in range(n_labels) if c not in columns]
        out[np.ix_(held, missing)] = 0.0
    return np.log(np.maximum(out, LOG_FLOOR))


class StackedClassifier(ClassifierBase):
    """TF-IDF log-probabilities next to L2-normalized encoder embeddings, one linear head."""

    kind = "stacked"

    def __init__(
        self,
        model_name: str,
        source: str,
        *,
        prefix: str = "",
        max_length: int | None = None,
        folds: int = DEFAULT_FOLDS,
        seed: int = 0,
    ) -> None:
        self.model_name = model_name
        self.source = source
        self.prefix = prefix
        self.max_length = max_length
        self.folds = folds
        self.seed = seed
        self.labels: list[str] = []
        self.C: float | None = None
        self._encoder: TextEncoder | None = None

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder(self.source, prefix=self.prefix, max_length=self.max_length)
        return self._encoder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = self.encoder.encode(check_texts(texts))
        self.max_length = self.encoder.max_length
        return embeddings

    def _features(self, embeddings: np.ndarray, log_proba: np.ndarray) -> np.ndarray:
        return np.hstack([embeddings.astype(np.float64), log_proba])

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        val_texts: Sequence[str],
        val_labels: Sequence[str],
        train_embeddings: np.ndarray | None = None,
        val_embeddings: np.ndarray | None = None,
        baseline: TfidfBaseline | None = None,
    ) -> StackedClassifier:
        """Fit on ``texts``; ``baseline`` (a TF-IDF model fit on exactly these rows) and
        precomputed embeddings may be passed to skip that work."""
        linear = require_module("sklearn.linear_model", what="method stacked", install=TRAIN_EXTRA)
        texts = check_texts(texts)
        y = self._set_labels(labels)
        if baseline is None:
            baseline = TfidfBaseline(seed=self.seed).fit(texts, labels)
        if list(baseline.labels) != self.labels:
            raise ModelError(
                f"the TF-IDF model knows labels {baseline.labels}, the training rows {self.labels}"
            )
        self.baseline_ = baseline
        x_emb = train_embeddings if train_embeddings is not None else self.embed(texts)
        oof = out_of_fold_log_proba(
            texts,
            y,
            len(self.labels),
            folds=self.folds,
            seed=self.seed,
            analyzer=baseline.analyzer,
        )
        x = self._features(x_emb, oof)
        index = {name: i for i, name in enumerate(self.labels)}
        keep = [i for i, label in enumerate(val_labels) if label in index]
        self.C = _C_GRID[1]
        if keep:
            val_texts = [val_texts[i] for i in keep]
            y_val = np.array([index[val_labels[i]] for i in keep])
            v_emb = val_embeddings[keep] if val_embeddings is not None else self.embed(val_texts)
            x_val = self._features(v_emb, self._log_proba(val_texts))
            best = -1.0
            for C in _C_GRID:
                candidate = linear.LogisticRegression(
                    C=C, max_iter=3000, class_weight="balanced"
                ).fit(x, y)
                score = macro_f1_of_codes(y_val, candidate.predict(x_val))
                if score > best:
                    best, self.C = score, C
        head = linear.LogisticRegression(C=self.C, max_iter=3000, class_weight="balanced")
        head.fit(x, y)
        self.coef_, self.intercept_ = head.coef_, head.intercept_
        return self

    def _log_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.log(np.maximum(self.baseline_.predict_proba(list(texts)), LOG_FLOOR))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._require_fitted()
        texts = check_texts(texts)
        return self.proba_from_embeddings(self.embed(texts), texts)

    def proba_from_embeddings(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        x = self._features(embeddings, self._log_proba(texts))
        return linear_proba(x, self.coef_, self.intercept_)

    def save(self, directory: str | Path) -> None:
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.baseline_.save(directory / "baseline")
        write_arrays_atomic(
            directory / "head.safetensors",
            {
                "coef": np.ascontiguousarray(self.coef_, dtype=np.float64),
                "intercept": np.ascontiguousarray(self.intercept_, dtype=np.float64),
            },
        )
        self._write_manifest(
            directory,
            model_name=self.model_name,
            source=self.source,
            prefix=self.prefix,
            max_length=self.max_length,
            C=self.C,
            folds=self.folds,
            features=["embedding", "tfidf_log_proba"],
        )

    @classmethod
    def load(cls, directory: str | Path) -> StackedClassifier:
        from safetensors.numpy import load_file

        from aiflywheel.models.catalog import CATALOG, resolve_model

        directory = Path(directory)
        manifest = read_manifest(directory)
        source = manifest["source"]
        if manifest["model_name"] in CATALOG:  # re-resolve: caches can move between machines
            source = resolve_model(manifest["model_name"]).source
        model = cls(
            manifest["model_name"],
            source,
            prefix=manifest["prefix"],
            max_length=manifest["max_length"],
            folds=manifest["folds"],
        )
        model.labels = list(manifest["labels"])
        model.C = manifest["C"]
        model.baseline_ = TfidfBaseline.load(directory / "baseline")
        weights = load_file(str(directory / "head.safetensors"))
        model.coef_, model.intercept_ = weights["coef"], weights["intercept"]
        return model


__all__ = ["StackedClassifier", "linear_proba", "out_of_fold_log_proba"]
