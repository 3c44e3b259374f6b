"""Methods ``finetune`` and ``lora``: an encoder trained end to end with the HF Trainer
(set up by ``aiflywheel.training.trainer``, shared with distillation).

Training writes checkpoints under ``work_dir/checkpoints``. Ctrl-C (SIGINT) saves a
checkpoint at the end of the current step and raises ``TrainingInterrupted``; calling
``fit`` again with the same ``work_dir`` resumes from the last checkpoint (optimizer,
scheduler, RNG and data position included). On several training processes
(``flywheel train --nproc N``, ``torchrun``, ``accelerate launch``) ``fit`` runs on every
one of them with DDP (see ``aiflywheel.training.distributed``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiflywheel.errors import ModelError, require_module
from aiflywheel.tasks.text_classification.models import layer_cache
from aiflywheel.tasks.text_classification.models.base import (
    ClassifierBase,
    check_texts,
    read_manifest,
)
from aiflywheel.tasks.text_classification.models.encoding import (
    batched_forward,
    choose_max_length,
    load_tokenizer,
    torch_module,
    transformers_module,
)
from aiflywheel.training import distributed
from aiflywheel.training import trainer as training
from aiflywheel.training.distributed import on_every_rank

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
    cache_frozen_layers: bool = True

    @property
    def caches_frozen_layers(self) -> bool:
        """Whether training caches the frozen bottom layers' outputs (see ``layer_cache``)."""
        return (
            self.cache_frozen_layers
            and self.method == "finetune"
            and self.freeze_embeddings
            and self.freeze_layers > 0
        )


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
    @on_every_rank
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
                "set split.val above 0 and lower split.train to match (the fractions sum to 1)"
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
        work_dir = Path(work_dir)
        cached = s.caches_frozen_layers and distributed.current() is None
        if cached:
            train_set, val_set = (
                layer_cache.CachedRows(self.frozen_cache(model, tokenizer, t, work_dir), labels)
                for t, labels in ((texts, y), (val_texts, y_val))
            )
        else:
            train_set = self._tokenize(tokenizer, texts, y)
            val_set = self._tokenize(tokenizer, val_texts, y_val)

        checkpoints = work_dir / "checkpoints"
        steps_per_epoch = math.ceil(len(texts) / s.batch_size)
        total_steps = max(1, math.ceil(steps_per_epoch * s.epochs))
        args = training.training_arguments(
            checkpoints,
            epochs=s.epochs,
            batch_size=s.batch_size,
            learning_rate=s.learning_rate or DEFAULT_LR[s.method],
            weight_decay=s.weight_decay,
            warmup_steps=int(s.warmup_ratio * total_steps),
            eval_every=s.eval_every_steps or steps_per_epoch,
            seed=s.seed,
        )
        callbacks = [
            transformers.EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience)
        ]
        if log_path is not None:
            callbacks.append(training.JsonlLogCallback(Path(log_path)))
        weights = None
        if s.class_weights:
            counts = np.bincount(y, minlength=len(self.labels)).astype(np.float64)
            weights = torch.tensor(
                len(y) / (len(self.labels) * np.maximum(counts, 1)), dtype=torch.float32
            )
        if cached:
            # Only the top layers run (on the cached hidden states); they are the full
            # model's own modules, so the full model holds what they learned afterwards.
            with layer_cache.top_layers_view(model, s.freeze_layers):
                trainer, stopper = training.new_trainer(
                    model,
                    args,
                    train_set=train_set,
                    val_set=val_set,
                    tokenizer=tokenizer,
                    loss=training.cross_entropy(weights),
                    callbacks=callbacks,
                    collator=layer_cache.pad_cached,
                    sampler=layer_cache.BucketSampler(
                        train_set.cache.lengths, s.batch_size, s.seed
                    ),
                )
                self.resumed_from = training.run(trainer, stopper, checkpoints)
        else:
            trainer, stopper = training.new_trainer(
                model,
                args,
                train_set=train_set,
                val_set=val_set,
                tokenizer=tokenizer,
                loss=training.cross_entropy(weights),
                callbacks=callbacks,
            )
            self.resumed_from = training.run(trainer, stopper, checkpoints)
        self.best_val_macro_f1 = trainer.state.best_metric
        self.steps = trainer.state.global_step
        model = trainer.model
        if s.method == "lora":
            model = model.merge_and_unload()
        model.eval()
        self._model = model
        self._tokenizer = tokenizer
        return self

    def frozen_cache(self, model, tokenizer, texts: Sequence[str], work_dir: Path):
        """The cached outputs of the frozen layers for ``texts`` (computed on first use)."""
        s = self.settings
        key = layer_cache.cache_key(
            self.source, s.freeze_layers, self.max_length, self.prefix, texts
        )
        directory = Path(work_dir) / layer_cache.CACHE_DIR
        cache = layer_cache.open_cache(directory, key)
        if cache is None:
            cache, _ = layer_cache.encode_frozen(
                model,
                tokenizer,
                texts,
                layer=s.freeze_layers,
                prefix=self.prefix,
                max_length=self.max_length,
                directory=directory,
                key=key,
            )
        return cache

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

    def _tokenize(
        self, tokenizer, texts: Sequence[str], labels: np.ndarray, **extra: np.ndarray
    ) -> training.TokenizedRows:
        encodings = tokenizer(
            [self.prefix + t for t in texts], truncation=True, max_length=self.max_length
        )
        return training.TokenizedRows(dict(encodings), labels, **extra)

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


__all__ = ["FinetuneSettings", "FinetunedClassifier"]
