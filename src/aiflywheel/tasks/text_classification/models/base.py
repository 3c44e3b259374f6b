"""What every classifier shares: labels, input checks, predictions, save/load dispatch."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import ModelError, NotFittedError
from aiflywheel.files import write_json_atomic

CLASSIFIER_FILE = "classifier.json"
MAX_TEXTS_PER_CALL = 100_000


@dataclass(frozen=True)
class Prediction:
    """One prediction: the label and the probability of every label."""

    label: str
    probabilities: dict[str, float]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
        }


def macro_f1_of_codes(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the label codes present in either array (model selection inside fit)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for label in np.unique(np.concatenate([y_true, y_pred])):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def check_texts(texts: object) -> list[str]:
    """The texts of a predict call, or a ModelError that says what was wrong."""
    if texts is None:
        raise ModelError("predict needs a list of strings, got None")
    if isinstance(texts, str):
        raise ModelError("predict needs a list of strings, got a single string: wrap it in a list")
    if not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise ModelError(f"predict needs a list of strings, got {type(texts).__name__}")
    items = list(texts)  # type: ignore[arg-type]
    if not items:
        raise ModelError("predict needs at least one text, got an empty list")
    if len(items) > MAX_TEXTS_PER_CALL:
        raise ModelError(
            f"predict takes at most {MAX_TEXTS_PER_CALL} texts per call, got {len(items)}"
        )
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ModelError(
                f"predict needs strings; item {index} is {type(item).__name__}: {item!r:.60}"
            )
    return items


class ClassifierBase(ABC):
    """Label bookkeeping and the parts of the interface built on ``predict_proba``."""

    kind: str = ""
    labels: list[str]

    def _require_fitted(self) -> None:
        if not getattr(self, "labels", None):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    def _set_labels(self, labels: Sequence[str | None]) -> np.ndarray:
        """Sorted label names from the training labels; returns their integer codes."""
        if any(label is None for label in labels):
            raise ModelError("every training row needs a label")
        names = sorted(set(labels))  # type: ignore[arg-type]
        if len(names) < 2:
            raise ModelError(f"training needs at least 2 labels, got {len(names)}: {names}")
        self.labels = names
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[label] for label in labels], dtype=np.int64)

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, one row per text, columns in ``self.labels`` order."""

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        items = check_texts(texts)
        proba = self.predict_proba(items)
        return [
            Prediction(
                label=self.labels[int(row.argmax())],
                probabilities={
                    name: round(float(p), 6) for name, p in zip(self.labels, row, strict=True)
                },
            )
            for row in proba
        ]

    def _write_manifest(self, directory: Path, **extra: Any) -> None:
        write_json_atomic(
            directory / CLASSIFIER_FILE, {"kind": self.kind, "labels": self.labels, **extra}
        )


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CLASSIFIER_FILE
    if not path.is_file():
        raise ModelError(f"{directory} is not a saved classifier (no {CLASSIFIER_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_classifier(directory: str | Path):
    """Load whatever classifier ``save`` wrote into ``directory``."""
    directory = Path(directory)
    kind = read_manifest(directory)["kind"]
    if kind == "tfidf":
        from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline

        return TfidfBaseline.load(directory)
    if kind == "encoder_head":
        from aiflywheel.tasks.text_classification.models.encoder_head import EncoderHeadClassifier

        return EncoderHeadClassifier.load(directory)
    if kind == "stacked":
        from aiflywheel.tasks.text_classification.models.stacked import StackedClassifier

        return StackedClassifier.load(directory)
    if kind == "finetuned":
        from aiflywheel.tasks.text_classification.models.finetuned import FinetunedClassifier

        return FinetunedClassifier.load(directory)
    if kind == "onnx":
        from aiflywheel.tasks.text_classification.models.onnx_classifier import OnnxClassifier

        return OnnxClassifier.load(directory)
    raise ModelError(f"{directory}: unknown classifier kind {kind!r}")
