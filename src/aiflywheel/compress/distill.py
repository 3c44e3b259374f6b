"""Knowledge distillation of a fine-tuned classifier into a student with fewer layers.

The student is the teacher's own encoder with ``keep_layers`` of its layers, chosen evenly
spaced from bottom to top (12 -> 4 keeps layers 3, 6, 9 and 12), plus the teacher's
embeddings, pooler and head: it starts close to the teacher and only has to relearn how
the remaining layers fit together. It is trained on the teacher's soft labels
(probabilities softened by ``temperature``; KL divergence scaled by temperature squared,
as in Hinton et al. 2015) on the training split and on optional unlabeled texts the
teacher labels, mixed with ordinary cross-entropy on the training split's true labels
(weight ``1 - soft_weight``). Training is the same HF Trainer loop as fine-tuning
(``aiflywheel.training.trainer``) with ``distillation_loss`` as its loss. Each epoch ends
with validation macro-F1; the best epoch's weights are kept. The student is saved as a
normal fine-tuned model (kind ``finetuned``), so it can be served, exported to ONNX and
quantized like its teacher.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import ModelError
from aiflywheel.recipe import Recipe

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


def build_student(teacher_model, keep_layers: int):
    """A copy of ``teacher_model`` with ``keep_layers`` of its encoder layers, evenly spaced
    (``student_layers``); its input embeddings are frozen."""
    from aiflywheel.compress.prune import encoder_layers

    _, layers = encoder_layers(teacher_model)
    keep = student_layers(len(layers), keep_layers)
    student = copy.deepcopy(teacher_model)
    encoder, student_layers_list = encoder_layers(student)
    encoder.layer = type(layers)([student_layers_list[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    if isinstance(getattr(student.config, "layer_types", None), list):
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    for parameter in student.get_input_embeddings().parameters():
        parameter.requires_grad = False
    return student


def distill_student(
    teacher,
    out_dir: str | Path,
    *,
    train: Dataset,
    val: Dataset,
    settings: DistillSettings,
    work_dir: str | Path | None = None,
    report: Report = lambda _: None,
):
    """Train and save a ``settings.keep_layers``-layer student of ``teacher`` (a
    ``FinetunedClassifier``) in ``out_dir``; returns it loaded back.

    Training is the shared HF Trainer loop (``aiflywheel.training.trainer``) with
    ``distillation_loss``; its checkpoints go to ``work_dir`` (default: ``.distill-work``
    next to ``out_dir``'s folder), removed when done.
    """
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )
    from aiflywheel.training import trainer as training

    if not len(val):
        raise ModelError("distillation needs a non-empty validation split to pick its best epoch")
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir is not None else out_dir.parent / ".distill-work"
    student = build_student(teacher._model, settings.keep_layers)

    index = {name: i for i, name in enumerate(teacher.labels)}
    texts = list(train.texts) + list(settings.unlabeled_texts)
    labels = np.array(
        [index.get(label, -1) for label in train.labels] + [-1] * len(settings.unlabeled_texts),
        dtype=np.int64,
    )
    report(f"teacher labels {len(texts)} texts ({len(settings.unlabeled_texts)} unlabeled)")
    teacher_probs = teacher.predict_proba(texts, batch_size=64).astype(np.float32)
    val_rows = [
        (text, index[label])
        for text, label in zip(val.texts, val.labels, strict=True)
        if label in index
    ]

    holder = FinetunedClassifier(
        teacher.model_name,
        teacher.source,
        prefix=teacher.prefix,
        max_length=teacher.max_length,
        settings=FinetuneSettings(method="finetune", seed=settings.seed),
    )
    holder.labels = list(teacher.labels)
    tokenizer = holder._tokenizer = teacher._tokenizer
    train_set = holder._tokenize(tokenizer, texts, labels, teacher_probs=teacher_probs)
    val_set = holder._tokenize(
        tokenizer,
        [text for text, _ in val_rows],
        np.array([code for _, code in val_rows], dtype=np.int64),
    )

    steps_per_epoch = math.ceil(len(texts) / settings.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * settings.epochs))
    checkpoints = work_dir / "checkpoints"
    args = training.training_arguments(
        checkpoints,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        weight_decay=0.01,
        warmup_steps=int(settings.warmup_ratio * total_steps),
        eval_every=steps_per_epoch,
        seed=settings.seed,
        keep_extra_columns=True,
    )

    def loss(logits, labels, *, teacher_probs):
        return distillation_loss(
            logits,
            teacher_probs,
            labels,
            temperature=settings.temperature,
            soft_weight=settings.soft_weight,
        )

    trainer, stopper = training.new_trainer(
        student,
        args,
        train_set=train_set,
        val_set=val_set,
        tokenizer=tokenizer,
        loss=loss,
        callbacks=[training.EpochReport(report, steps_per_epoch, what="student")],
    )
    training.run(trainer, stopper, checkpoints)
    student = trainer.model
    student.eval()
    holder._model = student
    holder.best_val_macro_f1 = trainer.state.best_metric
    holder.steps = trainer.state.global_step
    holder.save(out_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return FinetunedClassifier.load(out_dir)


def unlabeled_texts(recipe: Recipe, splits: Path, *, base_dir: Path) -> list[str]:
    """Extra texts for a student from ``compress.distill_unlabeled``, prepared as training
    data was (cleaned, PII redacted), without near-duplicates of any split's rows (so the
    student never sees the validation or test texts) or of each other; a seeded sample of
    at most ``compress.distill_unlabeled_rows``."""
    from aiflywheel.data.clean import training_view
    from aiflywheel.data.ingest import ingest
    from aiflywheel.data.text_normalize import near_duplicate_key

    config = recipe.compress
    if config.distill_unlabeled is None:
        return []
    data = recipe.data.model_copy(
        update={
            "source": config.distill_unlabeled,
            "sample": None,
            "columns": recipe.data.columns.model_copy(
                update={"label": None, "meta": [], "id": None}
            ),
        }
    )
    rows = ingest(data, base_dir=base_dir, seed=recipe.seed, labeled=False).dataset
    seen = {
        near_duplicate_key(r.text)
        for name in ("train", "val", "test")
        for r in Dataset.from_jsonl(splits / f"{name}.jsonl")
    }
    texts: list[str] = []
    for record in rows:
        text = training_view(record.text, recipe.clean, recipe.pii)
        key = near_duplicate_key(text)
        if len(text) < recipe.clean.min_chars or key in seen:
            continue
        seen.add(key)
        texts.append(text)
    if len(texts) > config.distill_unlabeled_rows:
        texts = random.Random(recipe.seed).sample(texts, config.distill_unlabeled_rows)
    return texts


__all__ = [
    "DistillSettings",
    "build_student",
    "distill_student",
    "distillation_loss",
    "student_layers",
    "unlabeled_texts",
]
