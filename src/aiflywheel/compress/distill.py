"""Knowledge distillation of a fine-tuned classifier into a student with fewer layers.

The student is the teacher's own encoder with ``keep_layers`` of its layers, chosen evenly
spaced from bottom to top (12 -> 4 keeps layers 3, 6, 9 and 12), plus the teacher's
embeddings, pooler and head: it starts close to the teacher and only has to relearn how
the remaining layers fit together. It is trained on the teacher's soft labels
(probabilities softened by ``temperature``; KL divergence scaled by temperature squared,
as in Hinton et al. 2015) on the training split and on optional unlabeled texts the
teacher labels, mixed with ordinary cross-entropy on the training split's true labels
(weight ``1 - soft_weight``). Each epoch ends with validation macro-F1; the best epoch's
weights are kept. The student is saved as a normal fine-tuned model (kind
``finetuned``), so it can be served, exported to ONNX and quantized like its teacher.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import ModelError

Report = Callable[[str], None]


@dataclass
class DistillSettings:
    """How a student is trained (from the recipe's ``compress`` section)."""

    keep_layers: int = 4
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    temperature: float = 2.0
    soft_weight: float = 0.7
    warmup_ratio: float = 0.06
    seed: int = 0
    unlabeled_texts: list[str] = field(default_factory=list)


def student_layers(total: int, keep: int) -> list[int]:
    """Indices (0-based) of the ``keep`` teacher layers a student starts from, evenly spaced
    and always including the top one: ``student_layers(12, 4) == [2, 5, 8, 11]``."""
    if not 1 <= keep < total:
        raise ModelError(f"a student keeps between 1 and {total - 1} of {total} layers, not {keep}")
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def distillation_loss(student_logits, teacher_probs, labels, *, temperature: float, soft_weight):
    """``soft_weight`` x T^2 x KL(teacher_T || student_T) + (1 - soft_weight) x cross-entropy
    on rows with a true label (``labels`` >= 0; unlabeled rows carry -1)."""
    import torch

    log_student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    soft_teacher = torch.softmax(torch.log(teacher_probs.clamp_min(1e-8)) / temperature, dim=-1)
    soft = torch.nn.functional.kl_div(log_student, soft_teacher, reduction="batchmean")
    loss = soft_weight * soft * temperature**2
    labeled = labels >= 0
    if soft_weight < 1 and bool(labeled.any()):
        hard = torch.nn.functional.cross_entropy(student_logits[labeled].float(), labels[labeled])
        loss = loss + (1 - soft_weight) * hard
    return loss


def distill_student(
    teacher,
    out_dir: str | Path,
    *,
    train: Dataset,
    val: Dataset,
    settings: DistillSettings,
    report: Report = lambda _: None,
):
    """Train and save a ``settings.keep_layers``-layer student of ``teacher`` (a
    ``FinetunedClassifier``) in ``out_dir``; returns it loaded back."""
    import torch

    from aiflywheel.tasks.text_classification.models.base import macro_f1_of_codes
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )

    if not len(val):
        raise ModelError("distillation needs a non-empty validation split to pick its best epoch")
    base = getattr(teacher._model, teacher._model.base_model_prefix, teacher._model)
    layers = base.encoder.layer
    keep = student_layers(len(layers), settings.keep_layers)
    student = copy.deepcopy(teacher._model)
    student_base = getattr(student, student.base_model_prefix, student)
    student_base.encoder.layer = type(layers)([student_base.encoder.layer[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    if isinstance(getattr(student.config, "layer_types", None), list):
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    for parameter in student.get_input_embeddings().parameters():
        parameter.requires_grad = False

    index = {name: i for i, name in enumerate(teacher.labels)}
    texts = list(train.texts) + list(settings.unlabeled_texts)
    labels = np.array(
        [index.get(label, -1) for label in train.labels] + [-1] * len(settings.unlabeled_texts),
        dtype=np.int64,
    )
    report(f"teacher labels {len(texts)} texts ({len(settings.unlabeled_texts)} unlabeled)")
    teacher_probs = teacher.predict_proba(texts, batch_size=64).astype(np.float32)
    val_codes = np.array([index.get(label, -1) for label in val.labels])

    tokenizer = teacher._tokenizer
    encoded = tokenizer(
        [teacher.prefix + t for t in texts], truncation=True, max_length=teacher.max_length
    )["input_ids"]
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    steps_per_epoch = math.ceil(len(texts) / settings.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * settings.epochs))
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.01)
    warmup = int(settings.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / max(1, warmup)
            if step < warmup
            else max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        ),
    )
    holder = FinetunedClassifier(
        teacher.model_name,
        teacher.source,
        prefix=teacher.prefix,
        max_length=teacher.max_length,
        settings=FinetuneSettings(method="finetune", seed=settings.seed),
    )
    holder.labels = list(teacher.labels)
    holder._tokenizer = tokenizer

    from tqdm.auto import tqdm

    best: tuple[float, dict] | None = None
    step = 0
    epoch = 0
    progress = tqdm(total=total_steps, desc="distilling", unit="step", leave=False)
    while step < total_steps:
        epoch += 1
        student.train()
        for batch in _length_grouped_batches(encoded, settings.batch_size, rng):
            if step >= total_steps:
                break
            inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            logits = student(**inputs).logits
            loss = distillation_loss(
                logits,
                torch.from_numpy(teacher_probs[batch]),
                torch.from_numpy(labels[batch]),
                temperature=settings.temperature,
                soft_weight=settings.soft_weight,
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
        student.eval()
        holder._model = student
        predicted = holder.predict_proba(val.texts, batch_size=64).argmax(axis=1)
        score = macro_f1_of_codes(val_codes, predicted)
        report(f"student epoch {epoch}: loss {loss.item():.4f}, val macro-F1 {score:.4f}")
        if best is None or score > best[0]:
            best = (score, copy.deepcopy(student.state_dict()))
    progress.close()
    assert best is not None
    student.load_state_dict(best[1])
    student.eval()
    holder._model = student
    holder.best_val_macro_f1 = best[0]
    holder.steps = step
    holder.save(out_dir)
    return FinetunedClassifier.load(out_dir)


def _length_grouped_batches(
    encoded: Sequence[Sequence[int]], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Shuffled batches of rows of similar length (little padding), in shuffled order."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(encoded[i]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


__all__ = ["DistillSettings", "distill_student", "distillation_loss", "student_layers"]
