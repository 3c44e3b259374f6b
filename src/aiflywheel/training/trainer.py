"""One training loop: the HF Trainer, set up the same way for every model we train.

``training_arguments`` fixes the knobs every run shares (evaluation and checkpoints every
``eval_every`` steps, the best checkpoint by validation macro-F1 kept at the end,
length-grouped seeded batches, CPU or one GPU with fp16, no external reporting);
``LossTrainer`` takes the loss as a function of the logits and the batch (weighted
cross-entropy for fine-tuning, soft labels for distillation); ``run`` trains, resuming
from the last checkpoint in ``checkpoints`` and turning Ctrl-C (SIGINT) into a checkpoint
and ``TrainingInterrupted``. On several processes (``training.distributed``) each takes
an equal share of the global batch, only rank 0 saves checkpoints and logs, and a Ctrl-C
stops every process at the end of the same step.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aiflywheel.errors import TrainingInterrupted
from aiflywheel.tasks.text_classification.models.base import macro_f1_of_codes
from aiflywheel.tasks.text_classification.models.encoding import (
    torch_module,
    transformers_module,
)
from aiflywheel.training import distributed

torch = torch_module()
transformers = transformers_module()

Loss = Callable[..., "torch.Tensor"]  # loss(logits, labels, **extra columns of the batch)


class TokenizedRows:
    """Tokenized rows for the Trainer (dynamic padding happens in the collator): the
    encodings, one integer label per row, and optional extra per-row columns (such as a
    teacher's probabilities) that reach the loss function by name."""

    def __init__(self, encodings: dict, labels: np.ndarray, **extra: np.ndarray) -> None:
        self.encodings = encodings
        self.labels = labels
        self.extra = extra

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = int(self.labels[index])
        for key, values in self.extra.items():
            item[key] = values[index].tolist()
        return item


def training_arguments(
    checkpoints: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    warmup_steps: int,
    eval_every: int,
    seed: int,
    keep_extra_columns: bool = False,
):
    """``TrainingArguments`` every fine-tuning run shares (see the module docstring).

    ``keep_extra_columns`` keeps batch columns the model's forward does not take (a
    ``TokenizedRows``' extra columns), for a loss function that reads them.
    ``batch_size`` is the global batch: on N training processes each takes 1/N of it.
    """
    group = distributed.current()
    per_process = distributed.per_process_batch(batch_size, group.world_size if group else 1)
    return transformers.TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=epochs,
        per_device_train_batch_size=per_process,
        per_device_eval_batch_size=max(32, batch_size),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        eval_strategy="steps",
        eval_steps=eval_every,
        save_strategy="steps",
        save_steps=eval_every,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        logging_steps=max(1, min(50, eval_every // 2)),
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="group_by_length",
        remove_unused_columns=not keep_extra_columns,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        fp16=torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def compute_macro_f1(eval_prediction) -> dict[str, float]:
    """Validation macro-F1 (what picks the best checkpoint) and accuracy."""
    logits, labels = eval_prediction
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    return {
        "macro_f1": macro_f1_of_codes(labels, predicted),
        "accuracy": float(np.mean(predicted == labels)),
    }


def cross_entropy(class_weights=None) -> Loss:
    """Cross-entropy on the true labels, classes weighed by ``class_weights`` when given."""

    def loss(logits, labels, **_):
        weight = None if class_weights is None else class_weights.to(logits.device)
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)

    return loss


class LossTrainer(transformers.Trainer):
    """A Trainer whose loss is ``loss(logits, labels, **extra)``: the batch's columns the
    model does not take (``extra``) are passed to the loss, not to the model. Batches
    without them (validation) fall back to ``eval_loss`` (plain cross-entropy)."""

    def __init__(self, *args, loss: Loss, eval_loss: Loss | None = None, sampler=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampler = sampler
        self.loss = loss
        self.eval_loss = eval_loss or cross_entropy()
        self.extra_columns: tuple[str, ...] = ()

    def _get_train_sampler(self, train_dataset=None):
        return self.sampler or super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        if self.sampler is None:
            return super()._get_eval_sampler(eval_dataset)
        # Rows without input_ids (cached hidden states): validate in length order.
        lengths = [len(eval_dataset[i]["inputs_embeds"]) for i in range(len(eval_dataset))]
        return sorted(range(len(eval_dataset)), key=lengths.__getitem__)

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels")
        extra = {key: inputs.pop(key) for key in self.extra_columns if key in inputs}
        outputs = model(**inputs)
        if self.extra_columns and len(extra) < len(self.extra_columns):
            loss = self.eval_loss(outputs.logits, labels)
        else:
            loss = self.loss(outputs.logits, labels, **extra)
        return (loss, outputs) if return_outputs else loss


def new_trainer(
    model,
    args,
    *,
    train_set: TokenizedRows,
    val_set: TokenizedRows,
    tokenizer,
    loss: Loss,
    callbacks: list | None = None,
    collator: Callable | None = None,
    sampler=None,
) -> tuple[LossTrainer, InterruptCallback]:
    """A ``LossTrainer`` over ``train_set`` (validated on ``val_set``) with dynamic padding
    and macro-F1 evaluation; also returns its ``InterruptCallback`` for ``run``.

    ``collator`` replaces the tokenizer's padding collator and ``sampler`` the Trainer's
    length-grouped sampler (cached hidden states carry no ``input_ids`` to measure)."""
    stopper = InterruptCallback()
    trainer = LossTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator or transformers.DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_macro_f1,
        callbacks=[*(callbacks or []), stopper],
        loss=loss,
        sampler=sampler,
    )
    trainer.extra_columns = tuple(train_set.extra)
    return trainer, stopper


def run(trainer, stopper: InterruptCallback, checkpoints: Path) -> str | None:
    """Train, resuming from the last checkpoint in ``checkpoints`` (returned, or None).

    Ctrl-C saves a checkpoint at the end of the current step and raises
    ``TrainingInterrupted``; running the same training again resumes from it.
    """
    last = (
        transformers.trainer_utils.get_last_checkpoint(str(checkpoints))
        if checkpoints.is_dir()
        else None
    )
    group = distributed.current()
    if group is not None:  # every process resumes from the checkpoint the leader found
        last = group.broadcast(last)
    previous = signal.signal(signal.SIGINT, stopper.request_stop)
    try:
        trainer.train(resume_from_checkpoint=last)
    finally:
        signal.signal(signal.SIGINT, previous)
    if stopper.stop_requested:
        step = trainer.state.global_step
        raise TrainingInterrupted(
            f"training interrupted at step {step}; checkpoint saved in {checkpoints}: "
            "run the same command again to resume"
        )
    return last


class InterruptCallback(transformers.TrainerCallback):
    """Turns SIGINT into 'save a checkpoint now and stop' at the end of the step (of the
    same step on every training process: the request is reduced over the group)."""

    def __init__(self) -> None:
        self.stop_requested = False

    def request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def on_step_end(self, args, state, control, **kwargs):
        self.stop_requested = distributed.any_rank(self.stop_requested)
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class JsonlLogCallback(transformers.TrainerCallback):
    """Appends every Trainer log entry (loss, lr, eval metrics) to a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            entry = {"step": state.global_step, "epoch": state.epoch, **(logs or {})}
            handle.write(json.dumps(entry) + "\n")


class EpochReport(transformers.TrainerCallback):
    """Reports each validation in one line: ``<what> epoch N: loss L, val macro-F1 F``."""

    def __init__(self, report: Callable[[str], None], steps_per_epoch: int, *, what: str) -> None:
        self.report = report
        self.steps_per_epoch = steps_per_epoch
        self.what = what
        self.loss: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "eval_macro_f1" in logs:
            epoch = math.ceil(state.global_step / self.steps_per_epoch)
            loss = "" if self.loss is None else f"loss {self.loss:.4f}, "
            self.report(
                f"{self.what} epoch {epoch}: {loss}val macro-F1 {logs['eval_macro_f1']:.4f}"
            )


__all__ = [
    "EpochReport",
    "InterruptCallback",
    "JsonlLogCallback",
    "LossTrainer",
    "TokenizedRows",
    "compute_macro_f1",
    "cross_entropy",
    "new_trainer",
    "run",
    "training_arguments",
]
