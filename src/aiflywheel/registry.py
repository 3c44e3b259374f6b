"""Registered models, loaded by feature name: ``aiflywheel.load("review-sentiment")``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiflywheel.classifiers.base import Prediction, load_classifier
from aiflywheel.errors import ModelError
from aiflywheel.store import Store, open_store


@dataclass
class LoadedModel:
    """A registered model version, ready to predict."""

    feature: str
    version: int
    status: str
    classifier: object

    @property
    def labels(self) -> list[str]:
        return list(self.classifier.labels)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """A label and the probability of every label, per text."""
        return self.classifier.predict(texts)

    def explain(self, text: str, label: str | None = None) -> list[tuple[str, float]]:
        """Token attributions for one text (see ``aiflywheel.explain``)."""
        from aiflywheel.explain import explain_prediction

        return explain_prediction(self.classifier, text, label=label)


def parse_version_ref(ref: str) -> tuple[str, int | None]:
    """``feature`` or ``feature:3`` / ``feature:v3`` -> (feature, version or None)."""
    feature, _, version = ref.partition(":")
    if not version:
        return feature, None
    digits = version.removeprefix("v")
    if not digits.isdigit():
        raise ModelError(f"version in {ref!r} must be a number like {feature}:2, got {version!r}")
    return feature, int(digits)


def load(feature: str, version: int | None = None, *, store: Store | None = None) -> LoadedModel:
    """The champion of ``feature`` (else its newest candidate), or a given version."""
    if version is None:
        feature, version = parse_version_ref(feature)
    store = store or open_store()
    row = store.get_model_version(feature, version)
    if not Path(row.model_path).is_dir():
        raise ModelError(
            f"{feature} v{row.version}: model folder {row.model_path} is missing on this machine"
        )
    return LoadedModel(
        feature=feature,
        version=row.version,
        status=row.status,
        classifier=load_classifier(row.model_path),
    )
