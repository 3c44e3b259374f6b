"""Method ``auto`` on CPU: try candidates in order of cost within the time budget, keep
the best on validation macro-F1, and say why.

The candidates, cheapest first:

1. ``tfidf``: the TF-IDF baseline (trained anyway; every other candidate must beat it),
2. ``head``: frozen encoder embeddings + logistic regression,
3. ``stacked``: out-of-fold TF-IDF log-probabilities + the same embeddings -> logistic
   regression,
4. ``finetune``: the top layers fine-tuned on cached outputs of the frozen bottom layers.

One eval-mode pass of the encoder over the training and validation rows gives both the
embeddings (2, 3) and the frozen-layer cache (4). The budget (``train.time_budget_minutes``,
counted from the start of the run) is planned on throughput measured here: tokens per
second of the encoder (which sets ``max_length`` when the recipe leaves it open, and
whether the encoding pass fits at all) and the seconds of one top-layer training step on
cached states (which sets how many epochs fit). Time for the final evaluation (the test
rows, the explained mistakes) is kept in reserve. A candidate that does not fit is
skipped with the reason; when none beats the baseline on validation, the baseline serves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.data.dataset import Dataset
from aiflywheel.recipe import Recipe
from aiflywheel.tasks.text_classification.models.base import macro_f1_of_codes

Report = Callable[[str], None]

LENGTH_CHOICES = (256, 192, 128, 96, 64, 48, 32)
ENCODE_SHARE = 0.45  # of the budget left, at most, for the one encoding pass
EXPLAIN_TOKENS = 128  # explain_prediction scores at most this many tokens per mistake
TRAINED_TOP_LAYERS = 4  # auto trains the top 4 layers when the recipe freezes none
CALIBRATION_TEXTS = 16


@dataclass
class Candidate:
    """One tried (or skipped) candidate: val macro-F1, seconds, and a note."""

    method: str
    val_macro_f1: float | None
    seconds: float
    note: str = ""
    model: Any = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "val_macro_f1": None if self.val_macro_f1 is None else round(self.val_macro_f1, 4),
            "seconds": round(self.seconds, 1),
            "note": self.note,
        }


@dataclass
class AutoResult:
    """What auto chose, why, and every candidate's line."""

    method: str
    model: Any
    reason: str
    candidates: list[Candidate]
    max_length: int
    plan: dict[str, Any]

    def table(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.candidates]


def val_macro_f1(model, texts: Sequence[str], labels: Sequence[str], proba=None) -> float:
    """Validation macro-F1 of ``model`` (over rows whose label the model knows)."""
    index = {name: i for i, name in enumerate(model.labels)}
    keep = [i for i, label in enumerate(labels) if label in index]
    if proba is None:
        proba = model.predict_proba([texts[i] for i in keep])
    else:
        proba = np.asarray(proba)[keep]
    y = np.array([index[labels[i]] for i in keep])
    return macro_f1_of_codes(y, np.asarray(proba).argmax(axis=1))


def tokens_per_second(model, tokenizer, texts: Sequence[str], prefix: str, length: int) -> float:
    """Encoder throughput (tokens per second, eval mode) on a sample of real texts."""
    import torch

    step = max(1, len(texts) // CALIBRATION_TEXTS)
    sample = [prefix + t for t in list(texts)[::step][:CALIBRATION_TEXTS]]
    inputs = tokenizer(
        sample, padding=True, truncation=True, max_length=length, return_tensors="pt"
    )
    base = getattr(model, model.base_model_prefix, model)
    timings = []
    with torch.inference_mode():
        for _ in range(2):
            started = time.perf_counter()
            base(**inputs)
            timings.append(time.perf_counter() - started)
    return float(inputs["input_ids"].numel() / max(min(timings), 1e-6))


def cached_step_seconds(model, frozen: int, batch_size: int, length: int) -> float:
    """Seconds of one training step of the top layers on cached states (median of 3)."""
    import torch

    from aiflywheel.tasks.text_classification.models.layer_cache import top_layers_view

    hidden = int(model.config.hidden_size)
    embeds = torch.randn(batch_size, length, hidden)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    labels = torch.zeros(batch_size, dtype=torch.long)
    timings = []
    model.train()
    with top_layers_view(model, frozen):
        for _ in range(4):
            started = time.perf_counter()
            model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss.backward()
            model.zero_grad(set_to_none=True)
            timings.append(time.perf_counter() - started)
    model.eval()
    return float(np.median(timings[1:]))


def plan_length(
    token_lengths: Sequence[int],
    rate: float,
    seconds_left: float,
    ceiling: int,
    reserve: Callable[[int], float],
) -> tuple[int, float]:
    """The longest ``max_length`` (at most ``ceiling``) whose encoding takes at most
    ``ENCODE_SHARE`` of what is left after ``reserve(length)`` seconds, at ``rate``
    tokens/s; else the shortest choice. Returns it and its encoding's estimated seconds."""
    lengths = np.asarray(token_lengths)
    choices = [ceiling] + [c for c in LENGTH_CHOICES if c < ceiling]
    for length in choices:
        estimate = float(np.minimum(lengths, length).sum()) / rate
        if estimate <= ENCODE_SHARE * (seconds_left - reserve(length)):
            return length, estimate
    length = choices[-1]
    return length, float(np.minimum(lengths, length).sum()) / rate


def run_auto(
    recipe: Recipe,
    resolved,
    *,
    train: Dataset,
    val: Dataset,
    test_rows: int,
    baseline,
    baseline_seconds: float,
    baseline_fits_train: bool,
    max_length: int,
    length_fixed: bool,
    work_dir: Path,
    started: float,
    report: Report,
) -> AutoResult:
    """Try the candidates in order of cost within the budget; see the module docstring."""
    from aiflywheel.tasks.text_classification.models.encoding import load_tokenizer
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )
    from aiflywheel.tasks.text_classification.models.layer_cache import (
        CACHE_DIR,
        cache_key,
        encode_frozen,
        encoder_layers,
    )

    t = recipe.train
    budget = t.time_budget_minutes * 60
    left = lambda: budget - (time.perf_counter() - started)  # noqa: E731
    candidates = [
        Candidate(
            "tfidf",
            val_macro_f1(baseline, val.texts, val.labels),
            baseline_seconds,
            f"{baseline.name}, the baseline",
            baseline,
        )
    ]
    plan: dict[str, Any] = {"budget_seconds": budget}
    if left() <= 0:
        spent = f"skipped: the data check and the baseline used the {budget / 60:g} min budget"
        for method in ("head", "stacked", "finetune"):
            candidates.append(Candidate(method, None, 0.0, spent))
        return _decide(candidates, max_length, plan, report)

    tokenizer = load_tokenizer(resolved.source)
    probe = FinetunedClassifier(recipe.model.name, resolved.source, prefix=resolved.query_prefix)
    probe.labels = sorted(set(train.labels))
    model = probe._new_model()
    model.eval()
    _, layers = encoder_layers(model)
    frozen = t.freeze_layers or max(1, len(layers) - TRAINED_TOP_LAYERS)
    frozen = min(frozen, len(layers) - 1)

    prefix = resolved.query_prefix
    texts = [*train.texts, *val.texts]
    token_lengths = [len(ids) for ids in tokenizer([prefix + x for x in texts])["input_ids"]]
    rate = tokens_per_second(model, tokenizer, train.texts, prefix, max_length)
    seconds_per_token = 1 / rate

    def reserve_at(length: int) -> float:
        # The final evaluation encodes the test rows, the explained mistakes' variants
        # and the round-trip sample twice: kept in reserve whatever is chosen.
        mean = float(np.mean(np.minimum(token_lengths, length)))
        explain = recipe.evaluate.explain_mistakes * min(EXPLAIN_TOKENS, int(mean))
        return (test_rows + explain + 128) * mean * seconds_per_token + 15

    if length_fixed:
        length = max_length
        encode_estimate = float(np.minimum(token_lengths, length).sum() / rate)
    else:
        length, encode_estimate = plan_length(token_lengths, rate, left(), max_length, reserve_at)
    reserve = reserve_at(length)
    mean_tokens = float(np.mean(np.minimum(token_lengths, length)))
    plan.update(
        tokens_per_second=round(rate, 1),
        reserve_seconds=round(reserve, 1),
        encode_estimate_seconds=round(encode_estimate, 1),
        max_length=length,
        frozen_layers=frozen,
    )
    report(
        f"auto: encoder {recipe.model.name} runs {rate:,.0f} tokens/s here; encoding "
        f"{len(texts):,} train+val rows at max_length {length} needs ~{encode_estimate:.0f} s "
        f"of the {left():.0f} s left ({reserve:.0f} s kept for the final evaluation)"
    )
    if encode_estimate > left() - reserve:
        for method in ("head", "stacked", "finetune"):
            candidates.append(Candidate(method, None, 0.0, "skipped: encoding does not fit"))
        return _decide(candidates, length, plan, report)

    began = time.perf_counter()
    key = lambda rows: cache_key(resolved.source, frozen, length, prefix, rows)  # noqa: E731
    cache_dir = work_dir / CACHE_DIR
    embeddings = []
    for part in (train, val):
        _, pooled = encode_frozen(
            model,
            tokenizer,
            part.texts,
            layer=frozen,
            prefix=prefix,
            max_length=length,
            directory=cache_dir,
            key=key(part.texts),
            pooled=True,
        )
        embeddings.append(pooled)
    encode_seconds = time.perf_counter() - began
    plan["encode_seconds"] = round(encode_seconds, 1)
    x_train, x_val = embeddings

    began = time.perf_counter()
    from aiflywheel.tasks.text_classification.models.encoder_head import EncoderHeadClassifier

    head = EncoderHeadClassifier(
        recipe.model.name,
        resolved.source,
        prefix=prefix,
        max_length=length,
        class_weights=t.class_weights,
        seed=recipe.seed,
    )
    head.fit(
        train.texts,
        train.labels,
        val_texts=val.texts,
        val_labels=val.labels,
        train_embeddings=x_train,
        val_embeddings=x_val,
    )
    head_f1 = val_macro_f1(head, val.texts, val.labels, head.proba_from_embeddings(x_val))
    candidates.append(
        Candidate(
            "head",
            head_f1,
            encode_seconds + time.perf_counter() - began,
            f"encoding {encode_seconds:.0f} s (shared) + logistic regression",
            head,
        )
    )
    report(f"auto: head val macro-F1 {head_f1:.4f}")

    from aiflywheel.tasks.text_classification.models.stacked import StackedClassifier

    stack_estimate = baseline_seconds * 4.5 + 5  # 5 out-of-fold fits on 4/5 of the rows + head
    if stack_estimate > left() - reserve:
        candidates.append(
            Candidate("stacked", None, 0.0, f"skipped: needs ~{stack_estimate:.0f} s")
        )
    else:
        began = time.perf_counter()
        stacked = StackedClassifier(
            recipe.model.name, resolved.source, prefix=prefix, max_length=length, seed=recipe.seed
        )
        stacked.fit(
            train.texts,
            train.labels,
            val_texts=val.texts,
            val_labels=val.labels,
            train_embeddings=x_train,
            val_embeddings=x_val,
            baseline=baseline if baseline_fits_train else None,
        )
        stacked_f1 = val_macro_f1(
            stacked, val.texts, val.labels, stacked.proba_from_embeddings(x_val, val.texts)
        )
        candidates.append(
            Candidate(
                "stacked",
                stacked_f1,
                time.perf_counter() - began,
                "out-of-fold TF-IDF log-probabilities + embeddings",
                stacked,
            )
        )
        report(f"auto: stacked val macro-F1 {stacked_f1:.4f}")

    step = cached_step_seconds(model, frozen, t.batch_size, max(8, int(mean_tokens)))
    steps_per_epoch = math.ceil(len(train) / t.batch_size)
    eval_seconds = math.ceil(len(val) / max(32, t.batch_size)) * step * 2 / 3
    epoch_seconds = steps_per_epoch * step + eval_seconds
    room = left() - reserve
    epochs = min(float(t.epochs), math.floor(room / epoch_seconds * 4) / 4)
    plan.update(
        cached_step_seconds=round(step, 3),
        epoch_estimate_seconds=round(epoch_seconds, 1),
        finetune_epochs=epochs,
    )
    top = len(layers) - frozen
    if epochs < 1:
        candidates.append(
            Candidate(
                "finetune",
                None,
                0.0,
                f"skipped: one epoch of the top {top} layers needs ~{epoch_seconds:.0f} s "
                f"({steps_per_epoch} steps of {step:.2f} s), {max(room, 0):.0f} s left",
            )
        )
        return _decide(candidates, length, plan, report)
    report(
        f"auto: fine-tuning the top {top} layers on cached states: {step:.2f} s a step, "
        f"{epochs:g} epochs x {steps_per_epoch} steps (~{epochs * epoch_seconds:.0f} s)"
    )
    began = time.perf_counter()
    tuned = FinetunedClassifier(
        recipe.model.name,
        resolved.source,
        prefix=prefix,
        max_length=length,
        settings=FinetuneSettings(
            method="finetune",
            epochs=epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            weight_decay=t.weight_decay,
            warmup_ratio=t.warmup_ratio,
            eval_every_steps=t.eval_every_steps,
            early_stopping_patience=t.early_stopping_patience,
            class_weights=t.class_weights,
            freeze_embeddings=True,
            freeze_layers=frozen,
            seed=recipe.seed,
            cache_frozen_layers=t.cache_frozen_layers,
        ),
    )
    tuned.fit(
        train.texts,
        train.labels,
        val_texts=val.texts,
        val_labels=val.labels,
        work_dir=work_dir,
        log_path=work_dir / "train_log.jsonl",
    )
    candidates.append(
        Candidate(
            "finetune",
            tuned.best_val_macro_f1,
            time.perf_counter() - began,
            f"top {top} layers, {tuned.steps} steps on cached layer-{frozen} states",
            tuned,
        )
    )
    report(f"auto: finetune val macro-F1 {tuned.best_val_macro_f1:.4f}")
    return _decide(candidates, length, plan, report)


def _decide(candidates: list[Candidate], length: int, plan: dict, report: Report) -> AutoResult:
    """The best candidate on validation macro-F1 (the cheaper one on a tie)."""
    tried = [c for c in candidates if c.val_macro_f1 is not None]
    best = max(tried, key=lambda c: c.val_macro_f1)  # max keeps the first (cheapest) of ties
    lines = "; ".join(
        f"{c.method} {c.val_macro_f1:.4f} ({c.seconds:.0f} s)"
        if c.val_macro_f1 is not None
        else f"{c.method} {c.note}"
        for c in candidates
    )
    if best.method == "tfidf":
        reason = (
            f"auto: no candidate beat the TF-IDF baseline on validation macro-F1 ({lines}) "
            "-> the baseline serves"
        )
    else:
        reason = f"auto: {best.method} has the best validation macro-F1 ({lines}) -> {best.method}"
    return AutoResult(best.method, best.model, reason, candidates, length, plan)


__all__ = ["AutoResult", "Candidate", "plan_length", "run_auto", "val_macro_f1"]
