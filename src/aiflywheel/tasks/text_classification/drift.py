"""A classifier's training data as drift checks see it: the frozen splits beside the model.

A text-classification version's folder is ``<run dir>/model`` (or ``baseline``, or a
compressed variant's ``<variant>/model``); every one of those run folders keeps the splits
it learned from in ``splits/{train,val,test}.jsonl``. The training split is the reference;
the validation and test splits (rows the version never learned from) give the reference
out-of-vocabulary share and the version's own predictions and confidences.
"""

from __future__ import annotations

import random
from pathlib import Path

from aiflywheel.core.task import DriftReference
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import DataError

HELDOUT_PREDICTIONS = 500  # held-out texts the version classifies for its reference outputs


def splits_dir(model_path: str | Path) -> Path:
    return Path(model_path).parent / "splits"


def classifier_drift_reference(
    model_path: str | Path, *, limit: int, seed: int, with_outputs: bool = True
) -> DriftReference:
    from aiflywheel.tasks.text_classification.models.base import load_classifier

    splits = splits_dir(model_path)
    train_file = splits / "train.jsonl"
    if not train_file.is_file():
        raise DataError(
            f"{train_file} is missing: the version's training split is needed as the drift "
            "reference"
        )
    train = Dataset.from_jsonl(train_file).texts
    heldout: list[str] = []
    for name in ("val", "test"):
        path = splits / f"{name}.jsonl"
        if path.is_file():
            heldout += Dataset.from_jsonl(path).texts
    rng = random.Random(seed)
    texts = rng.sample(train, min(limit, len(train)))
    heldout = rng.sample(heldout, min(HELDOUT_PREDICTIONS, len(heldout)))
    outputs = []
    if heldout and with_outputs:
        classifier = load_classifier(model_path)
        outputs = [p.to_json() for p in classifier.predict(heldout)]
    return DriftReference(
        texts=texts,
        vocabulary_texts=train,
        heldout_texts=heldout,
        heldout_outputs=outputs,
        source=f"{train_file} ({len(train)} rows; held out: val+test, {len(heldout)} rows)",
    )
