"""The round-trip check: a saved classifier must answer exactly as the one in memory.

Every stage that registers a model (train, retrain, compress, distill, prune) saves it,
loads it back from disk, and compares the two on a sample of texts before anything is
evaluated or recorded. The stage then evaluates the model *as loaded*, so the figures in
the registry are those of the model that will serve. A save that scrambles weights (as a
Fortran-ordered array written raw once did) fails the run with one line that names the
difference, instead of registering a model that answers differently from its report.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aiflywheel.errors import ModelError
from aiflywheel.tasks.text_classification.models.base import load_classifier

ROUNDTRIP_SAMPLE = 64
PROBABILITY_TOLERANCE = 1e-4


def roundtrip_sample(texts: Sequence[str], seed: int, size: int = ROUNDTRIP_SAMPLE) -> list[str]:
    """Up to ``size`` texts, picked the same way for the same seed."""
    texts = list(texts)
    if len(texts) <= size:
        return texts
    return random.Random(seed).sample(texts, size)


def compare_predictions(
    in_memory: np.ndarray,
    loaded: np.ndarray,
    labels: list[str],
    loaded_labels: list[str],
    *,
    tolerance: float = PROBABILITY_TOLERANCE,
) -> str | None:
    """None when both agree; else one sentence that names the first difference."""
    if list(labels) != list(loaded_labels):
        return f"labels {list(labels)} became {list(loaded_labels)}"
    if in_memory.shape != loaded.shape:
        return f"probabilities of shape {in_memory.shape} became {loaded.shape}"
    diff = np.abs(in_memory - loaded)
    first, second = in_memory.argmax(axis=1), loaded.argmax(axis=1)
    # A changed label counts unless the two labels were tied (within tolerance) in memory.
    margin = in_memory[np.arange(len(first)), first] - in_memory[np.arange(len(first)), second]
    flipped = np.flatnonzero((first != second) & (margin > tolerance))
    if len(flipped):
        i = int(flipped[0])
        return (
            f"{len(flipped)} of {len(first)} sample texts changed label (text {i}: "
            f"{labels[first[i]]!r} -> {labels[second[i]]!r})"
        )
    worst = float(diff.max()) if diff.size else 0.0
    if worst > tolerance:
        row = int(np.unravel_index(diff.argmax(), diff.shape)[0])
        return f"probabilities differ by up to {worst:.6f} (text {row}; allowed {tolerance:g})"
    return None


def reload_verified(
    model,
    directory: str | Path,
    texts: Sequence[str],
    *,
    what: str,
    seed: int = 0,
    loaded=None,
):
    """Load the classifier saved in ``directory`` and check it against ``model``.

    Returns the loaded classifier (evaluate that one). ``loaded`` may be given when the
    caller has already loaded it from ``directory``. Raises ``ModelError`` naming the
    difference when the saved model does not reproduce the in-memory predictions.
    """
    sample = roundtrip_sample(texts, seed)
    loaded = loaded if loaded is not None else load_classifier(directory)
    if not sample:
        return loaded
    problem = compare_predictions(
        np.asarray(model.predict_proba(sample), dtype=np.float64),
        np.asarray(loaded.predict_proba(sample), dtype=np.float64),
        list(model.labels),
        list(loaded.labels),
    )
    if problem is not None:
        raise ModelError(
            f"the saved {what} in {directory} does not reproduce the trained one: {problem}; "
            "nothing was registered"
        )
    return loaded
