"""Methods ``finetune`` and ``lora``: an encoder trained end to end with the HF Trainer.

Training writes checkpoints under ``work_dir/checkpoints``. Ctrl-C (SIGINT) saves a
checkpoint at the end of the current step and raises ``TrainingInterrupted``; calling
``fit`` again with the same ``work_dir`` resumes from the last checkpoint (optimizer,
scheduler, RNG and data position included). The same code runs under ``accelerate
launch`` or ``torchrun`` for several GPUs or machines.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiflywheel.errors import ModelError, TrainingInterrupted, require_module
from aiflywheel.tasks.text_classification.models.base import (
    ClassifierBase,
    check_texts,
    macro_f1_of_codes,
    read_manifest,
)
from aiflywheel.tasks.text_classification.models.encoding import (
    batched_forward,
    choose_max_length,
    load_tokenizer,
    torch_module,
    transformers_module,
)

# This module is imported only when a fine-tuned model is trained or loaded.
torch = torch_module()
transformers = transformers_module()

DEFAULT_LR = {"finetune": 5e-5, "lora": 5e-4}


@dataclass
class FinetuneSettings:
    """The training knobs (from the recipe's ``train`` section)."""

    method: str = "finetune"
    epochs: float = 3.0
    batch_size: int = 16
    learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    eval_every_steps: int | None = None
    early_stopping_patience: int = 2
    class_weights: bool = True
    freeze_embeddings: bool = True
    freeze_layers: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    seed: int = 0


class _TextDataset:
    """Tokenized rows for the Trainer (dynamic padding happens in the collator)."""

    def __init__(self, encodings: dict, labels: np.ndarray) -> None:
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = int(self.labels[index])
        return item


class FinetunedClassifier(ClassifierBase):
    """A transformers sequence classifier fine-tuned fully or through LoRA adapters."""

    kind = "finetuned"

    def __init__(
        self,
        model_name: str,
        source: str,
        *,
        prefix: str = "",
        max_length: int | None = None,
        settings: FinetuneSettings | None = None,
    ) -> None:
        self.model_name = model_name
        self.source = source
        self.prefix = prefix
        self.max_length = max_length
        self.settings = settings or FinetuneSettings()
        self.labels: list[str] = []
        self.resumed_from: str | None = None
        self.best_val_macro_f1: float | None = None
        self.steps: int = 0

    # -- training ---------------------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        val_texts: Sequence[str],
        val_labels: Sequence[str],
        work_dir: str | Path,
        log_path: str | Path | None = None,
    ) -> FinetunedClassifier:
        """Train with early stopping on validation macro-F1; resumes from ``work_dir``."""
        texts = check_texts(texts)
        if not len(val_texts):
            raise ModelError(
                "fine-tuning needs a non-empty validation split for early stopping; "
                "set split.val above 0"
            )
        y = self._set_labels(labels)
        index = {name: i for i, name in enumerate(self.labels)}
        val_keep = [i for i, label in enumerate(val_labels) if label in index]
        y_val = np.array([index[val_labels[i]] for i in val_keep], dtype=np.int64)
        val_texts = [val_texts[i] for i in val_keep]

        s = self.settings
        tokenizer = load_tokenizer(self.source)
        if self.max_length is None:
            self.max_length = choose_max_length(tokenizer, texts, self.prefix)
        model = self._new_model()
        train_set = self._tokenize(tokenizer, texts, y)
        val_set = self._tokenize(tokenizer, val_texts, y_val)

        work_dir = Path(work_dir)
        checkpoints = work_dir / "checkpoints"
        steps_per_epoch = math.ceil(len(texts) / s.batch_size)
        total_steps = max(1, math.ceil(steps_per_epoch * s.epochs))
        every = s.eval_every_steps or steps_per_epoch
        args = transformers.TrainingArguments(
            output_dir=str(checkpoints),
            num_train_epochs=s.epochs,
            per_device_train_batch_size=s.batch_size,
            per_device_eval_batch_size=max(32, s.batch_size),
            learning_rate=s.learning_rate or DEFAULT_LR[s.method],
            weight_decay=s.weight_decay,
            warmup_steps=int(s.warmup_ratio * total_steps),
            eval_strategy="steps",
            eval_steps=every,
            save_strategy="steps",
            save_steps=every,
            save_total_limit=2,
            load_best_model_at_end=True,
            metric_for_best_model="macro_f1",
            greater_is_better=True,
            logging_steps=max(1, min(50, every // 2)),
            seed=s.seed,
            data_seed=s.seed,
            train_sampling_strategy="group_by_length",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            fp16=torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=False,
        )
        stopper = InterruptCallback()
        callbacks = [
            transformers.EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience),
            stopper,
        ]
        if log_path is not None:
            callbacks.append(JsonlLogCallback(Path(log_path)))
        weights = None
        if s.class_weights:
            counts = np.bincount(y, minlength=len(self.labels)).astype(np.float64)
            weights = torch.tensor(
                len(y) / (len(self.labels) * np.maximum(counts, 1)), dtype=torch.float32
            )
        trainer = WeightedTrainer(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=val_set,
            data_collator=transformers.DataCollatorWithPadding(tokenizer),
            compute_metrics=_compute_macro_f1,
            callbacks=callbacks,
            class_weights=weights,
        )
        last = (
            transformers.trainer_utils.get_last_checkpoint(str(checkpoints))
            if checkpoints.is_dir()
            else None
        )
        self.resumed_from = last
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
        self.best_val_macro_f1 = trainer.state.best_metric
        self.steps = trainer.state.global_step
        model = trainer.model
        if s.method == "lora":
            model = model.merge_and_unload()
        model.eval()
        self._model = model
        self._tokenizer = tokenizer
        return self

    def _new_model(self):
        try:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                self.source,
                num_labels=len(self.labels),
                id2label=dict(enumerate(self.labels)),
                label2id={name: i for i, name in enumerate(self.labels)},
            )
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load {self.source!r} for fine-tuning: {str(exc).splitlines()[0]}"
            ) from None
        s = self.settings
        if s.method == "lora":
            peft = require_module(
                "peft", what="method lora", install="pip install 'aiflywheel[lora]'"
            )
            config = peft.LoraConfig(
                task_type=peft.TaskType.SEQ_CLS,
                r=s.lora_r,
                lora_alpha=s.lora_alpha,
                lora_dropout=s.lora_dropout,
                target_modules=_attention_projections(model),
            )
            model = peft.get_peft_model(model, config)
        else:
            if s.freeze_embeddings:
                for parameter in model.get_input_embeddings().parameters():
                    parameter.requires_grad = False
            if s.freeze_layers:
                _freeze_bottom_layers(model, s.freeze_layers)
        return model

    def _tokenize(self, tokenizer, texts: Sequence[str], labels: np.ndarray) -> _TextDataset:
        encodings = tokenizer(
            [self.prefix + t for t in texts], truncation=True, max_length=self.max_length
        )
        return _TextDataset(dict(encodings), labels)

    # -- inference --------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        self._require_fitted()
        return batched_forward(
            self._tokenizer,
            lambda inputs: torch.softmax(self._model(**inputs).logits.float(), dim=-1),
            check_texts(texts),
            prefix=self.prefix,
            max_length=self.max_length,
            batch_size=batch_size,
        )

    def save(self, directory: str | Path) -> None:
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(str(directory), safe_serialization=True)
        self._tokenizer.save_pretrained(str(directory))
        self._write_manifest(
            directory,
            model_name=self.model_name,
            prefix=self.prefix,
            max_length=self.max_length,
            method=self.settings.method,
            best_val_macro_f1=self.best_val_macro_f1,
            steps=self.steps,
        )

    @classmethod
    def load(cls, directory: str | Path) -> FinetunedClassifier:
        directory = Path(directory)
        manifest = read_manifest(directory)
        model = cls(
            manifest["model_name"],
            str(directory),
            prefix=manifest["prefix"],
            max_length=manifest["max_length"],
            settings=FinetuneSettings(method=manifest["method"]),
        )
        model.labels = list(manifest["labels"])
        model.best_val_macro_f1 = manifest.get("best_val_macro_f1")
        model.steps = manifest.get("steps", 0)
        model._tokenizer = load_tokenizer(str(directory))
        model._model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(directory)
        )
        model._model.eval()
        return model


def _freeze_bottom_layers(model, count: int) -> None:
    """Stop gradients through the embeddings and the bottom ``count`` encoder layers."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ModelError("train.freeze_layers: this model has no encoder.layer list to freeze")
    if count >= len(layers):
        raise ModelError(
            f"train.freeze_layers={count} would freeze all {len(layers)} layers; "
            f"use at most {len(layers) - 1}"
        )
    frozen = [base.embeddings, *layers[:count]]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad = False


def _attention_projections(model) -> list[str]:
    """Names of the query/value projections LoRA adapts, for BERT-like and other encoders."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for pair in (["query", "value"], ["q_proj", "v_proj"], ["q_lin", "v_lin"], ["q", "v"]):
        if set(pair) <= names:
            return pair
    raise ModelError("method lora: cannot find attention query/value projections in this model")


def _compute_macro_f1(eval_prediction) -> dict[str, float]:
    logits, labels = eval_prediction
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    return {
        "macro_f1": macro_f1_of_codes(labels, predicted),
        "accuracy": float(np.mean(predicted == labels)),
    }


class WeightedTrainer(transformers.Trainer):
    """A Trainer whose loss weighs classes (inverse frequency) when asked."""

    def __init__(self, *args, class_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = None
        if self.class_weights is not None:
            weight = self.class_weights.to(outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


class InterruptCallback(transformers.TrainerCallback):
    """Turns SIGINT into 'save a checkpoint now and stop' at the end of the step."""

    def __init__(self) -> None:
        self.stop_requested = False

    def request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class JsonlLogCallback(transformers.TrainerCallback):
    """Appends every Trainer log entry (loss, lr, eval metrics) to a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            entry = {"step": state.global_step, "epoch": state.epoch, **(logs or {})}
            handle.write(json.dumps(entry) + "\n")


__all__ = ["FinetuneSettings", "FinetunedClassifier"]
