"""Pruning: the top encoder layers of a fine-tuned classifier dropped, then a short
recovery fine-tune on the parent's training split (``prune_top_layers``); and the layer
helpers that pruning and distillation share."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import shutil
from pathlib import Path

from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import ModelError
from aiflywheel.recipe import Recipe


def require_finetuned(classifier, what: str):
    """``classifier`` if it is a fitted ``FinetunedClassifier``, else ModelError naming ``what``."""
    from aiflywheel.tasks.text_classification.models.finetuned import FinetunedClassifier

    if not isinstance(classifier, FinetunedClassifier):
        kind = getattr(classifier, "kind", type(classifier).__name__)
        raise ModelError(f"{what} needs a fine-tuned transformer classifier, got kind {kind!r}")
    classifier._require_fitted()
    return classifier


def layer_count(model_dir: str | Path) -> int:
    """Encoder layers of the transformers model saved in ``model_dir`` (from config.json)."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"cannot read the model config {path}") from None
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    raise ModelError(f"{path} names no layer count (num_hidden_layers)")


def check_keep_layers(keep: int, total: int, *, name: str = "keep_layers", error=ModelError):
    """Pruning must keep at least one layer and remove at least one."""
    allowed = f"keep between 1 and {total - 1}" if total > 1 else "it cannot be pruned"
    if keep < 1:
        raise error(
            f"{name}={keep} would remove every one of the model's {total} layers; {allowed}"
        )
    if keep >= total:
        raise error(f"{name}={keep} removes nothing: the model has {total} layers; {allowed}")


def encoder_layers(model):
    """The encoder of a transformers model and its list of layers (ModelError when absent)."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ModelError("cannot prune this model: it has no encoder.layer list")
    return base.encoder, layers


def prune_top_layers(
    classifier,
    keep_layers: int,
    out_dir: str | Path,
    *,
    train: Dataset,
    val: Dataset,
    recovery_epochs: float = 1.0,
    max_rows: int | None = None,
    settings=None,
    work_dir: str | Path | None = None,
):
    """The classifier with only its bottom ``keep_layers`` encoder layers, saved in ``out_dir``.

    The top layers are dropped (the pooler and the classification head stay), then a
    recovery fine-tune of ``recovery_epochs`` on ``train`` (a seeded sample of at most
    ``max_rows``), early-stopped on ``val``, lets the remaining layers adapt; 0 epochs
    skips it. ``settings`` (a ``FinetuneSettings``) gives batch size, learning rate and
    seed; frozen bottom layers are capped below ``keep_layers``. Returns the pruned
    ``FinetunedClassifier`` (kind ``finetuned``, so ``load_classifier`` reads it back).
    """
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )

    classifier = require_finetuned(classifier, "pruning")
    encoder, layers = encoder_layers(classifier._model)
    check_keep_layers(keep_layers, len(layers))
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir is not None else out_dir.parent / ".prune-work"
    pruned = copy.copy(classifier)
    pruned._model = copy.deepcopy(classifier._model)
    encoder, layers = encoder_layers(pruned._model)
    encoder.layer = type(layers)(list(layers)[:keep_layers])
    config = pruned._model.config
    config.num_hidden_layers = keep_layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:keep_layers]
    base = settings or FinetuneSettings()
    if recovery_epochs <= 0:
        pruned.settings = dataclasses.replace(base, method="finetune")
        pruned.save(out_dir)
        return FinetunedClassifier.load(out_dir)

    start_dir = work_dir / "pruned"
    pruned.save(start_dir)
    rows = list(train)
    if max_rows is not None and len(rows) > max_rows:
        rows = random.Random(base.seed).sample(rows, max_rows)
    recovered = FinetunedClassifier(
        classifier.model_name,
        str(start_dir),
        prefix=classifier.prefix,
        max_length=classifier.max_length,
        settings=dataclasses.replace(
            base,
            method="finetune",
            epochs=recovery_epochs,
            freeze_layers=min(base.freeze_layers, keep_layers - 1),
        ),
    )
    recovered.fit(
        [r.text for r in rows],
        [r.label for r in rows],
        val_texts=val.texts,
        val_labels=val.labels,
        work_dir=work_dir / "recovery",
        log_path=out_dir.parent / "recovery_log.jsonl",
    )
    if recovered.labels != classifier.labels:
        raise ModelError(
            f"the recovery sample has labels {recovered.labels}, the parent {classifier.labels}; "
            "raise compress.prune_recovery_max_rows"
        )
    recovered.save(out_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return recovered


def recovery_settings(recipe: Recipe, parent_method: str):
    """The ``FinetuneSettings`` of a pruned model's recovery fine-tune (the recipe's
    ``train`` section; the parent's learning rate only when it was fully fine-tuned)."""
    from aiflywheel.tasks.text_classification.models.finetuned import FinetuneSettings

    t = recipe.train
    return FinetuneSettings(
        method="finetune",
        batch_size=t.batch_size,
        learning_rate=t.learning_rate if parent_method == "finetune" else None,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        early_stopping_patience=t.early_stopping_patience,
        class_weights=t.class_weights,
        freeze_embeddings=t.freeze_embeddings,
        freeze_layers=t.freeze_layers,
        cache_frozen_layers=t.cache_frozen_layers,
        seed=recipe.seed,
    )


__all__ = [
    "check_keep_layers",
    "encoder_layers",
    "layer_count",
    "prune_top_layers",
    "recovery_settings",
    "require_finetuned",
]
