"""Train: data check -> baseline -> model -> evaluate -> register, in one run folder.

``train_feature(recipe, ...)`` works in ``runs/<feature>/.train-<key>.partial`` where
the key hashes the recipe: interrupting (Ctrl-C) keeps that folder with its
checkpoints, and the same command resumes there. On success the folder is renamed to
``runs/<feature>/<run id>/`` and the model is registered as a candidate version::

    <run id>/
      dataset.jsonl splits/ data_report.{json,html} recipe.yaml   (the data stage)
      baseline/                TF-IDF + logistic regression
      model/                   the trained classifier (safetensors + tokenizer + config)
      train_log.jsonl          loss, learning rate, validation metrics per log step
      metrics.json report.html evaluation against the baseline on the frozen test split
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.data.check import check_data
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import DataError, ModelError, TrainingInterrupted
from aiflywheel.evaluate import cross_validate, evaluate_against_baseline, write_evaluation
from aiflywheel.models.catalog import ResolvedModel, resolve_model
from aiflywheel.recipe import Recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store, new_run_id

Report = Callable[[str], None]


@dataclass
class PreparedData:
    """What a data stage wrote into the work folder (``splits/`` and ``dataset.jsonl``)."""

    dataset_version: str
    split_version: str
    rows: int
    labels: dict[str, int]
    source: str


def check_data_stage(recipe: Recipe) -> Callable[[Path], PreparedData]:
    """The default data stage of a training run: ``check_data`` on the recipe's source."""

    def prepare(work_dir: Path) -> PreparedData:
        data = check_data(recipe, work_dir)
        return PreparedData(
            dataset_version=data.dataset_version,
            split_version=data.split_version,
            rows=data.report["rows"]["kept"],
            labels=data.report["labels"]["counts"],
            source=recipe.data.source,
        )

    return prepare


@dataclass
class TrainResult:
    """A finished training run and the version it registered."""

    run_id: str
    run_dir: Path
    version: int
    method: str
    method_reason: str
    metrics: dict[str, Any]

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"


def work_key(recipe: Recipe, extra: str = "") -> str:
    """Same recipe (and so same data, seed and settings) -> same resumable work folder."""
    blob = json.dumps(recipe.model_dump(mode="json"), sort_keys=True) + extra
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def choose_method(
    recipe: Recipe, resolved: ResolvedModel, n_train: int, max_length: int, report: Report
) -> tuple[str, str]:
    """The method to use and why; ``auto`` measures one training step on this machine."""
    method = recipe.model.method
    if method != "auto":
        return method, f"method {method} set in the recipe"
    import torch

    if torch.cuda.is_available():
        return "finetune", "auto: a GPU is available, so the encoder is fine-tuned"
    seconds = measure_step_seconds(
        resolved.source, recipe.train.batch_size, max_length, recipe.train.freeze_layers
    )
    steps = math.ceil(
        min(n_train, recipe.train.max_train_samples or n_train) / recipe.train.batch_size
    )
    minutes = seconds * steps * recipe.train.epochs / 60
    budget = recipe.train.time_budget_minutes
    detail = (
        f"no GPU; one training step of {recipe.model.name} takes {seconds:.2f} s here, so "
        f"fine-tuning {steps} steps x {recipe.train.epochs:g} epochs needs ~{minutes:.0f} min"
    )
    if minutes <= budget:
        return "finetune", f"auto: {detail}, within the {budget:g} min budget -> finetune"
    return "head", (
        f"auto: {detail}, over the {budget:g} min budget -> head (frozen encoder + logistic "
        "regression); set model.method: finetune or raise train.time_budget_minutes"
    )


def measure_step_seconds(
    source: str, batch_size: int, max_length: int, freeze_layers: int
) -> float:
    """Wall time of one forward+backward pass at this batch size and length (2nd of 2)."""
    import torch

    from aiflywheel.classifiers.finetuned import FinetunedClassifier, FinetuneSettings

    probe = FinetunedClassifier(
        "probe", source, settings=FinetuneSettings(freeze_layers=freeze_layers)
    )
    probe.labels = ["a", "b"]
    model = probe._new_model()
    length = min(max_length, getattr(model.config, "max_position_embeddings", max_length))
    ids = torch.randint(5, max(6, min(1000, model.config.vocab_size)), (batch_size, length))
    labels = torch.zeros(batch_size, dtype=torch.long)
    elapsed = 0.0
    for _ in range(2):
        started = time.perf_counter()
        model(input_ids=ids, labels=labels).loss.backward()
        elapsed = time.perf_counter() - started
    return elapsed


def _sample(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or len(dataset) <= limit:
        return dataset
    keep = sorted(random.Random(seed).sample(range(len(dataset)), limit))
    return Dataset(dataset[i] for i in keep)


def _build_model(recipe: Recipe, method: str, resolved: ResolvedModel):
    if method == "head":
        from aiflywheel.classifiers.encoder_head import EncoderHeadClassifier

        return EncoderHeadClassifier(
            recipe.model.name,
            resolved.source,
            prefix=resolved.query_prefix,
            max_length=recipe.model.max_length,
            class_weights=recipe.train.class_weights,
            seed=recipe.seed,
        )
    from aiflywheel.classifiers.finetuned import FinetunedClassifier, FinetuneSettings

    t = recipe.train
    settings = FinetuneSettings(
        method=method,
        epochs=t.epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        eval_every_steps=t.eval_every_steps,
        early_stopping_patience=t.early_stopping_patience,
        class_weights=t.class_weights,
        freeze_embeddings=t.freeze_embeddings,
        freeze_layers=t.freeze_layers,
        lora_r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        seed=recipe.seed,
    )
    return FinetunedClassifier(
        recipe.model.name,
        resolved.source,
        prefix=resolved.query_prefix,
        max_length=recipe.model.max_length,
        settings=settings,
    )


def _fit(model, method: str, train: Dataset, val: Dataset, work_dir: Path) -> None:
    if method == "head":
        from tqdm.auto import tqdm

        with tqdm(total=len(train), desc="encoding train rows", unit="text") as bar:
            model.fit(
                train.texts,
                train.labels,
                val_texts=val.texts,
                val_labels=val.labels,
                progress=lambda done: bar.update(done - bar.n),
            )
    else:
        model.fit(
            train.texts,
            train.labels,
            val_texts=val.texts,
            val_labels=val.labels,
            work_dir=work_dir,
            log_path=work_dir / "train_log.jsonl",
        )


def train_feature(
    recipe: Recipe,
    *,
    store: Store,
    settings: Settings,
    report: Report = lambda _: None,
    prepare: Callable[[Path], PreparedData] | None = None,
    kind: str = "train",
    key_extra: str = "",
) -> TrainResult:
    """Run the whole training flow for ``recipe``; see the module docstring.

    ``prepare`` is the data stage (default: ``check_data`` on the recipe's source); a
    retrain passes one that writes the champion's frozen splits plus accepted feedback.
    ``key_extra`` separates the resumable work folders of different data.
    """
    from aiflywheel.classifiers.baseline import TfidfBaseline
    from aiflywheel.classifiers.encoding import choose_max_length, load_tokenizer, torch_threads

    store.upsert_feature(
        recipe.feature, recipe.task, recipe.description, recipe.model_dump(mode="json")
    )
    feature_dir = settings.runs_dir / recipe.feature
    work_dir = feature_dir / f".{kind}-{work_key(recipe, key_extra)}.partial"
    resuming = (work_dir / "checkpoints").is_dir()
    run_id = new_run_id()
    final_dir = feature_dir / run_id
    store.start_run(recipe.feature, kind, str(final_dir), run_id=run_id)
    try:
        report("resuming from the checkpoints in " + str(work_dir) if resuming else "checking data")
        data = (prepare or check_data_stage(recipe))(work_dir)
        version = store.record_dataset_version(
            recipe.feature,
            content_hash=data.dataset_version,
            split_version=data.split_version,
            rows=data.rows,
            labels=data.labels,
            source=data.source,
            path=str(final_dir / "dataset.jsonl"),
        )
        parts = {
            n: Dataset.from_jsonl(work_dir / "splits" / f"{n}.jsonl")
            for n in ("train", "val", "test")
        }
        train = _sample(parts["train"], recipe.train.max_train_samples, recipe.seed)
        val, test = parts["val"], parts["test"]
        if not len(val):
            raise DataError("the validation split is empty; set split.val above 0 (e.g. 0.1)")

        resolved = resolve_model(recipe.model.name, settings)
        with torch_threads(recipe.train.threads):
            max_length = recipe.model.max_length or choose_max_length(
                load_tokenizer(resolved.source), train.texts, resolved.query_prefix
            )
            method, reason = choose_method(recipe, resolved, len(train), max_length, report)
            report(reason)

            # The baseline always sees the whole training split: it is cheap, and a model
            # trained on a sample must beat the best cheap alternative, not a handicapped one.
            full_train = parts["train"]
            started = time.perf_counter()
            baseline = TfidfBaseline(seed=recipe.seed).fit(full_train.texts, full_train.labels)
            baseline_seconds = time.perf_counter() - started
            baseline.save(work_dir / "baseline")
            report(f"baseline {baseline.name}: {baseline_seconds:.1f} s")

            model = _build_model(recipe, method, resolved)
            if hasattr(model, "max_length") and model.max_length is None:
                model.max_length = max_length
            report(
                f"training {recipe.model.name}/{method} on {len(train):,} rows "
                f"(max_length {max_length})"
            )
            started = time.perf_counter()
            _fit(model, method, train, val, work_dir)
            model_seconds = time.perf_counter() - started
            model.save(work_dir / "model")
            report(f"model trained in {model_seconds:.1f} s; evaluating on {len(test):,} test rows")

            cv = None
            if recipe.evaluate.cross_validation:
                cv = _cross_validation(recipe, method, resolved, work_dir, parts, report)
            metrics = evaluate_against_baseline(
                model,
                baseline,
                test,
                recipe.evaluate,
                feature=recipe.feature,
                model_name=f"{recipe.model.name}/{method}",
                model_seconds=model_seconds,
                baseline_seconds=baseline_seconds,
                seed=recipe.seed,
                cross_validation=cv,
            )
        metrics["method_reason"] = reason
        metrics["dataset_version"] = data.dataset_version
        metrics["train_rows"] = len(train)
        metrics["baseline"]["train_rows"] = len(full_train)
        write_evaluation(metrics, work_dir)
        shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)
        work_dir.rename(final_dir)
    except BaseException as exc:
        interrupted = isinstance(exc, (TrainingInterrupted, KeyboardInterrupt))
        status = "interrupted" if interrupted else "failed"
        # Checkpoints are kept for a later resume; a folder without any is just debris.
        if status == "failed" and not (work_dir / "checkpoints").is_dir():
            shutil.rmtree(work_dir, ignore_errors=True)
        store.finish_run(run_id, status=status, error=str(exc) or type(exc).__name__)
        raise
    registered = store.register_model_version(
        recipe.feature,
        run_id=run_id,
        dataset_version_id=version.id,
        model_path=str(final_dir / "model"),
        base_model=recipe.model.name,
        method=method,
        metrics=summarize(metrics),
        recipe=recipe.model_dump(mode="json"),
    )
    metrics["version"] = f"v{registered.version}"
    write_evaluation(metrics, final_dir)
    store.finish_run(
        run_id,
        status="succeeded",
        summary={"version": registered.version, **summarize(metrics)},
        dataset_version_id=version.id,
    )
    return TrainResult(
        run_id=run_id,
        run_dir=final_dir,
        version=registered.version,
        method=method,
        method_reason=reason,
        metrics=metrics,
    )


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures stored with a model version (the full set stays in metrics.json)."""
    model, baseline = metrics["model"], metrics["baseline"]
    return {
        "macro_f1": model["metrics"]["macro_f1"],
        "macro_f1_ci": model["macro_f1_ci"],
        "accuracy": model["metrics"]["accuracy"],
        "baseline_macro_f1": baseline["metrics"]["macro_f1"],
        "beats_baseline": metrics["comparison"]["beats_baseline"],
        "gain_ci": metrics["comparison"]["ci"],
        "test_rows": metrics["test_rows"],
        "train_seconds": model["train_seconds"],
        "verdict": metrics["verdict"],
    }


def _cross_validation(recipe, method, resolved, data_dir: Path, parts, report: Report) -> dict:
    folds_file = data_dir / "splits" / "folds.json"
    if not folds_file.is_file():
        raise ModelError("evaluate.cross_validation needs split.k_folds in the recipe (e.g. 5)")
    folds = json.loads(folds_file.read_text(encoding="utf-8"))["folds"]
    pool = Dataset([*parts["train"], *parts["val"]])
    report(f"cross-validating {method} over {len(folds)} folds")
    if method == "head":
        probe = _build_model(recipe, method, resolved)
        embeddings = dict(zip((r.id for r in pool), probe.embed(pool.texts), strict=True))

        def fit_fold(train: Dataset):
            model = _build_model(recipe, method, resolved)
            model.max_length = probe.max_length
            x = np.stack([embeddings[r.id] for r in train])
            return model.fit(train.texts, train.labels, train_embeddings=x)

        return cross_validate(fit_fold, pool, folds)

    def fit_fold(train: Dataset):
        model = _build_model(recipe, method, resolved)
        held_out = _sample(train, max(1, len(train) // 10), recipe.seed)
        held_ids = {r.id for r in held_out}
        rest = Dataset(r for r in train if r.id not in held_ids)
        with tempfile.TemporaryDirectory() as tmp:
            _fit(model, method, rest, held_out, Path(tmp))
        return model

    return cross_validate(fit_fold, pool, folds)
