"""Domain-adaptive pre-training of the classifier's encoder, judged by the gate.

With ``train.pretrain.mlm`` in the recipe, a training run (after the usual model, trained
from the catalogue encoder) also:

1. gathers the domain texts: the training split's texts plus the unlabeled texts of
   ``train.pretrain.mlm.texts``, cleaned as the training rows were (``training_view``),
   minus every text of the validation and test splits (exact match after cleaning) and
   duplicates; ``heldout_texts`` of the unlabeled ones are kept out to measure the MLM
   loss before and after;
2. continues MLM training of the encoder on them (``aiflywheel.training.mlm``) into
   ``pretrain/`` of the run (the adapted encoder is reused by a resumed run);
3. trains the same method from the adapted encoder (``pretrain/model``) and evaluates it
   on the frozen test split;
4. compares it with the model without pre-training by a paired bootstrap of macro-F1 on
   the same test rows, through the classifier gate (``gate.min_macro_f1_gain`` and
   ``gate.require_significance`` of the recipe): with pre-training is preferred only when
   the gate passes. The preferred model ends in ``model/`` (the other in
   ``pretrain/other_model``), and the run registers it; the caller audits the decision.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiflywheel.core.gate import classifier_gate
from aiflywheel.data.clean import training_view
from aiflywheel.data.dataset import Dataset
from aiflywheel.data.unlabeled import read_unlabeled_texts
from aiflywheel.errors import DataError
from aiflywheel.metrics.classification import paired_bootstrap
from aiflywheel.models.catalog import ResolvedModel
from aiflywheel.recipe import Recipe
from aiflywheel.tasks.text_classification.evaluate import evaluate_against_baseline
from aiflywheel.tasks.text_classification.models.roundtrip import reload_verified
from aiflywheel.training.mlm import MlmSettings, train_mlm

WITH, WITHOUT = "with-pretrain", "without-pretrain"


@dataclass
class DomainTexts:
    """The MLM training texts, the held-out texts and how they were gathered."""

    train: list[str]
    heldout: list[str]
    counts: dict[str, int]


def domain_texts(recipe: Recipe, train: Dataset, val: Dataset, test: Dataset) -> DomainTexts:
    """Training-split texts + unlabeled texts, never a validation or test text."""
    mlm = recipe.train.pretrain.mlm
    raw = read_unlabeled_texts(mlm.texts, text_field=mlm.text_field, base_dir=recipe.base_dir)
    forbidden = set(val.texts) | set(test.texts)
    own = list(dict.fromkeys(train.texts))
    seen = set(own)
    unlabeled, removed = [], 0
    for text in raw:
        text = training_view(text, recipe.clean, recipe.pii)
        if len(text) < max(1, recipe.clean.min_chars):
            continue
        if text in forbidden:
            removed += 1
            continue
        if text not in seen:
            seen.add(text)
            unlabeled.append(text)
    rng = random.Random(recipe.seed)
    held_n = min(mlm.heldout_texts, len(unlabeled) // 5)
    held_index = set(rng.sample(range(len(unlabeled)), held_n))
    heldout = [t for i, t in enumerate(unlabeled) if i in held_index]
    extra = [t for i, t in enumerate(unlabeled) if i not in held_index]
    pool = own + extra
    if mlm.max_texts is not None and len(pool) > mlm.max_texts:
        pool = [pool[i] for i in sorted(rng.sample(range(len(pool)), mlm.max_texts))]
    if not pool:
        raise DataError(f"train.pretrain.mlm: no domain text left from {mlm.texts!r}")
    return DomainTexts(
        train=pool,
        heldout=heldout,
        counts={
            "source_texts": len(raw),
            "removed_val_test": removed,
            "train_split_texts": len(own),
            "unlabeled_texts": len(extra),
            "heldout_texts": len(heldout),
            "mlm_texts": len(pool),
        },
    )


@dataclass
class PretrainChoice:
    """With or without pre-training: the gate's pick, why, and the figures of both."""

    preferred: str
    reason: str
    metrics: dict[str, Any]  # the preferred model's evaluation (metrics.json)
    model_seconds: float
    details: dict[str, Any]  # metrics["pretrain"]: MLM figures, both models, the gate


def with_and_without(
    recipe: Recipe,
    resolved: ResolvedModel,
    method: str,
    max_length: int,
    work_dir: Path,
    parts: dict[str, Dataset],
    train: Dataset,
    baseline,
    without: dict[str, Any],
    without_model,
    without_seconds: float,
    report,
) -> PretrainChoice:
    """Pre-train, train the same method from the adapted encoder, let the gate choose;
    see the module docstring. ``without*`` is the model trained as usual, in ``model/``."""
    from aiflywheel.tasks.text_classification.train import _build_model, _fit

    mlm = recipe.train.pretrain.mlm
    val, test = parts["val"], parts["test"]
    texts = domain_texts(recipe, train, val, test)
    c = texts.counts
    report(
        f"MLM pre-training on {c['mlm_texts']:,} domain texts ({c['train_split_texts']:,} of "
        f"the training split + {c['unlabeled_texts']:,} unlabeled; {c['removed_val_test']:,} "
        f"val/test texts removed; {c['heldout_texts']:,} held out), up to {mlm.minutes:g} min"
    )
    folder = work_dir / "pretrain"
    started = time.perf_counter()
    result = train_mlm(
        resolved.source,
        texts.train,
        texts.heldout,
        folder,
        MlmSettings(
            minutes=mlm.minutes,
            max_steps=mlm.max_steps,
            mask_probability=mlm.mask_probability,
            batch_size=mlm.batch_size,
            learning_rate=mlm.learning_rate,
            max_length=mlm.max_length,
            seed=recipe.seed,
        ),
        prefix=resolved.query_prefix,
        report=report,
    )
    pretrain_seconds = time.perf_counter() - started
    adapted = ResolvedModel(name=resolved.name, source=result.encoder_dir, entry=resolved.entry)

    name = f"{recipe.model.name}+mlm/{method}"
    report(f"training {name} on {len(train):,} rows from the adapted encoder")
    model = _build_model(recipe, method, adapted)
    if hasattr(model, "max_length"):
        model.max_length = max_length
    if hasattr(model, "bundle_encoder"):  # a head refers to its encoder: keep a copy with it
        model.bundle_encoder = True
    fit_dir = folder / "finetune"
    fit_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _fit(model, method, train, val, fit_dir)
    with_seconds = time.perf_counter() - started
    model.save(folder / "model")
    model = reload_verified(model, folder / "model", test.texts, what="model", seed=recipe.seed)
    with_metrics = evaluate_against_baseline(
        model,
        baseline,
        test,
        recipe.evaluate,
        feature=recipe.feature,
        model_name=name,
        model_seconds=with_seconds,
        baseline_seconds=without["baseline"]["train_seconds"],
        seed=recipe.seed,
    )

    y_true = test.labels
    labels = sorted(set(without["labels"]) | set(with_metrics["labels"]))
    comparison = paired_bootstrap(
        y_true,
        [p.label for p in model.predict(test.texts)],
        [p.label for p in without_model.predict(test.texts)],
        labels,
        n_resamples=recipe.evaluate.bootstrap_resamples,
        seed=recipe.seed,
    )
    gate, _, gain, lo, hi = classifier_gate({}, {}, comparison, recipe.gate)
    f1_with = with_metrics["model"]["metrics"]["macro_f1"]
    f1_without = without["model"]["metrics"]["macro_f1"]
    figures = (
        f"macro-F1 {f1_with:.3f} with vs {f1_without:.3f} without, gain {gain:+.2f} points "
        f"(95% CI {lo:+.2f} to {hi:+.2f})"
    )
    reason = gate.reason(f"with pre-training: {figures}", kept=f"without pre-training ({figures})")
    preferred = WITH if gate.passed else WITHOUT
    report(reason)

    def side(metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
        return {
            "name": metrics["model"]["name"],
            "macro_f1": metrics["model"]["metrics"]["macro_f1"],
            "macro_f1_ci": metrics["model"]["macro_f1_ci"],
            "accuracy": metrics["model"]["metrics"]["accuracy"],
            "train_seconds": round(seconds, 2),
            "gain_over_baseline_ci": metrics["comparison"]["ci"],
        }

    details = {
        "preferred": preferred,
        "reason": reason,
        "mlm": {**result.to_json(), "wall_seconds": round(pretrain_seconds, 2)},
        "texts": texts.counts,
        "source": mlm.texts,
        "with": side(with_metrics, with_seconds),
        "without": side(without, without_seconds),
        "comparison": comparison,
        "checks": gate.to_json(),
    }
    if preferred == WITH:
        _swap(work_dir / "model", folder / "model", folder / "other_model")
        chosen, seconds = with_metrics, with_seconds
    else:
        other = folder / "other_model"
        shutil.rmtree(other, ignore_errors=True)
        (folder / "model").rename(other)
        chosen, seconds = without, without_seconds
    return PretrainChoice(preferred, reason, chosen, seconds, details)


def _swap(current: Path, preferred: Path, other: Path) -> None:
    """``preferred`` becomes ``current``; the old ``current`` moves to ``other``."""
    shutil.rmtree(other, ignore_errors=True)
    current.rename(other)
    preferred.rename(current)


__all__ = ["WITH", "WITHOUT", "DomainTexts", "PretrainChoice", "domain_texts", "with_and_without"]
