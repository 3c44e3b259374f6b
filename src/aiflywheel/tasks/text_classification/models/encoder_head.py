"""Method ``head``: a frozen encoder's embeddings + a logistic-regression head.

The fast CPU path: the encoder runs once per text (no backward pass) and the head trains
in seconds. The regularization strength is chosen on the validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aiflywheel.errors import require_module
from aiflywheel.files import write_arrays_atomic
from aiflywheel.tasks.text_classification.models.base import (
    ClassifierBase,
    check_texts,
    macro_f1_of_codes,
    read_manifest,
)
from aiflywheel.tasks.text_classification.models.encoding import TRAIN_EXTRA, TextEncoder

_C_GRID = (0.25, 1.0, 4.0, 16.0)


class EncoderHeadClassifier(ClassifierBase):
    """Frozen encoder + logistic regression on L2-normalized mean-pooled embeddings."""

    kind = "encoder_head"

    def __init__(
        self,
        model_name: str,
        source: str,
        *,
        prefix: str = "",
        max_length: int | None = None,
        class_weights: bool = True,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.model_name = model_name
        self.source = source
        self.prefix = prefix
        self.max_length = max_length
        self.class_weights = class_weights
        self.batch_size = batch_size
        self.seed = seed
        self.labels: list[str] = []
        self.C: float | None = None
        # Save a copy of the encoder with the head (an adapted encoder that lives in a run,
        # not in the catalogue); a bundled model loads its own copy, never the alias.
        self.bundle_encoder = False
        self._encoder: TextEncoder | None = None

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder(self.source, prefix=self.prefix, max_length=self.max_length)
        return self._encoder

    def embed(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        embeddings = self.encoder.encode(
            check_texts(texts), batch_size=self.batch_size, progress=progress
        )
        self.max_length = self.encoder.max_length
        return embeddings

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        val_texts: Sequence[str] | None = None,
        val_labels: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
        train_embeddings: np.ndarray | None = None,
        val_embeddings: np.ndarray | None = None,
    ) -> EncoderHeadClassifier:
        """Fit the head; precomputed embeddings may be passed to skip encoding.

        ``progress(done)`` counts encoded texts over the training rows, then on through
        the validation rows (so a bar sized for both does not stall at the end).
        """
        linear = require_module("sklearn.linear_model", what="method head", install=TRAIN_EXTRA)
        y = self._set_labels(labels)
        x = train_embeddings if train_embeddings is not None else self.embed(texts, progress)
        weight = "balanced" if self.class_weights else None
        self.C = _C_GRID[1]
        if val_texts is not None and val_labels is not None and len(val_texts):
            index = {name: i for i, name in enumerate(self.labels)}
            keep = [i for i, label in enumerate(val_labels) if label in index]
            y_val = np.array([index[val_labels[i]] for i in keep])
            offset = len(x)
            x_val = (
                val_embeddings
                if val_embeddings is not None
                else self.embed(
                    val_texts, None if progress is None else lambda done: progress(offset + done)
                )
            )
            x_val = x_val[keep]
            best = -1.0
            for C in _C_GRID:
                candidate = linear.LogisticRegression(C=C, max_iter=3000, class_weight=weight)
                candidate.fit(x, y)
                score = macro_f1_of_codes(y_val, candidate.predict(x_val))
                if score > best:
                    best, self.C = score, C
        self.head_ = linear.LogisticRegression(C=self.C, max_iter=3000, class_weight=weight)
        self.head_.fit(x, y)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._require_fitted()
        return self.proba_from_embeddings(self.embed(texts))

    def proba_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        logits = embeddings @ self.coef_.T + self.intercept_
        if logits.shape[1] == 1:  # binary logistic regression has one logit column
            logits = np.hstack([-logits / 2, logits / 2])
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    @property
    def coef_(self) -> np.ndarray:
        return self.head_.coef_

    @property
    def intercept_(self) -> np.ndarray:
        return self.head_.intercept_

    def save(self, directory: str | Path) -> None:
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_arrays_atomic(
            directory / "head.safetensors",
            {
                "coef": self.coef_.astype(np.float32),
                "intercept": self.intercept_.astype(np.float32),
            },
        )
        source = self.source
        if self.bundle_encoder:
            import shutil

            bundled = directory / "encoder"
            if Path(self.source).resolve() != bundled.resolve():
                partial = directory / "encoder.partial"
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(self.source, partial)
                shutil.rmtree(bundled, ignore_errors=True)
                partial.rename(bundled)
            source = "encoder"
        self._write_manifest(
            directory,
            model_name=self.model_name,
            source=source,
            bundled_encoder=self.bundle_encoder,
            prefix=self.prefix,
            max_length=self.max_length,
            C=self.C,
            class_weights=self.class_weights,
        )

    @classmethod
    def load(cls, directory: str | Path) -> EncoderHeadClassifier:
        from safetensors.numpy import load_file

        from aiflywheel.models.catalog import CATALOG, resolve_model

        directory = Path(directory)
        manifest = read_manifest(directory)
        source = manifest["source"]
        if manifest.get("bundled_encoder"):
            source = str(directory / "encoder")
        elif manifest["model_name"] in CATALOG:  # re-resolve: caches can move between machines
            source = resolve_model(manifest["model_name"]).source
        model = cls(
            manifest["model_name"],
            source,
            prefix=manifest["prefix"],
            max_length=manifest["max_length"],
            class_weights=manifest["class_weights"],
        )
        model.bundle_encoder = bool(manifest.get("bundled_encoder"))
        model.labels = list(manifest["labels"])
        model.C = manifest["C"]
        weights = load_file(str(directory / "head.safetensors"))
        model.head_ = _FrozenHead(weights["coef"], weights["intercept"])
        return model


class _FrozenHead:
    """A loaded head: the weights, without refitting machinery."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef_ = coef
        self.intercept_ = intercept
