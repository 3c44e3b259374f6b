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
      pretrain/                with train.pretrain: the MLM-adapted encoder, the model trained
                               from it and the one the gate did not prefer (``pretrain.py``)
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.core.runs import feature_run
from aiflywheel.data.check import check_data
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import DataError, ModelError
from aiflywheel.models.catalog import ResolvedModel, resolve_model
from aiflywheel.recipe import Recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.text_classification.evaluate import (
    cross_validate,
    evaluate_against_baseline,
    write_evaluation,
)
from aiflywheel.tasks.text_classification.models.roundtrip import reload_verified
from aiflywheel.training import distributed

Report = Callable[[str], None]
FROZEN_CACHE = "frozen_cache"  # models.layer_cache.CACHE_DIR (not imported: it needs torch)


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
    baseline_version: int | None = None

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"


def work_key(recipe: Recipe, extra: str = "") -> str:
    """Same recipe (and so same data, seed and settings) -> same resumable work folder."""
    blob = json.dumps(recipe.model_dump(mode="json"), sort_keys=True) + extra
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def choose_method(recipe: Recipe) -> tuple[str, str]:
    """The method to use and why; ``auto`` on CPU is decided later by ``auto.run_auto``
    (candidates tried within the budget), with a GPU it fine-tunes."""
    method = recipe.model.method
    if method != "auto":
        return method, f"method {method} set in the recipe"
    import torch

    if torch.cuda.is_available():
        return "finetune", "auto: a GPU is available, so the encoder is fine-tuned"
    return "auto", (
        f"auto: no GPU; trying tfidf, head, stacked and cached top-layer finetune within "
        f"{recipe.train.time_budget_minutes:g} min"
    )


def _sample(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or len(dataset) <= limit:
        return dataset
    keep = sorted(random.Random(seed).sample(range(len(dataset)), limit))
    return Dataset(dataset[i] for i in keep)


def _build_model(recipe: Recipe, method: str, resolved: ResolvedModel):
    if method == "stacked":
        from aiflywheel.tasks.text_classification.models.stacked import StackedClassifier

        return StackedClassifier(
            recipe.model.name,
            resolved.source,
            prefix=resolved.query_prefix,
            max_length=recipe.model.max_length,
            seed=recipe.seed,
        )
    if method == "head":
        from aiflywheel.tasks.text_classification.models.encoder_head import EncoderHeadClassifier

        return EncoderHeadClassifier(
            recipe.model.name,
            resolved.source,
            prefix=resolved.query_prefix,
            max_length=recipe.model.max_length,
            class_weights=recipe.train.class_weights,
            seed=recipe.seed,
        )
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )

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
        cache_frozen_layers=t.cache_frozen_layers,
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

        total = len(train) + len(val)
        with tqdm(total=total, desc="encoding train + validation rows", unit="text") as bar:
            model.fit(
                train.texts,
                train.labels,
                val_texts=val.texts,
                val_labels=val.labels,
                progress=lambda done: bar.update(done - bar.n),
            )
    elif method == "stacked":
        model.fit(train.texts, train.labels, val_texts=val.texts, val_labels=val.labels)
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
    from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline
    from aiflywheel.tasks.text_classification.models.encoding import (
        choose_max_length,
        load_tokenizer,
        torch_threads,
    )

    run_started = time.perf_counter()  # auto's time budget counts from here

    store.upsert_feature(
        recipe.feature, recipe.task, recipe.description, recipe.model_dump(mode="json")
    )
    with feature_run(
        store,
        settings.runs_dir,
        recipe.feature,
        kind,
        work_name=f".{kind}-{work_key(recipe, key_extra)}",
        resumable=True,
        scratch=(FROZEN_CACHE,),  # a training-time device only: dropped on success
    ) as run:
        work_dir, final_dir = run.work_dir, run.final_dir
        resuming = run.resuming
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
            raise DataError(
                "the validation split is empty; set split.val above 0 and lower split.train "
                "to match (the fractions sum to 1: e.g. train 0.8, val 0.1, test 0.1)"
            )

        resolved = resolve_model(recipe.model.name, settings)
        with torch_threads(recipe.train.threads):
            max_length = recipe.model.max_length or choose_max_length(
                load_tokenizer(resolved.source), train.texts, resolved.query_prefix
            )
            method, reason = choose_method(recipe)
            report(reason)

            # The baseline always sees the whole training split: it is cheap, and a model
            # trained on a sample must beat the best cheap alternative, not a handicapped one.
            full_train = parts["train"]
            report(f"training the TF-IDF baseline on {len(full_train):,} rows")
            started = time.perf_counter()
            baseline = TfidfBaseline(seed=recipe.seed).fit(full_train.texts, full_train.labels)
            baseline_seconds = time.perf_counter() - started
            baseline.save(work_dir / "baseline")
            baseline = reload_verified(
                baseline, work_dir / "baseline", test.texts, what="baseline", seed=recipe.seed
            )
            report(f"baseline {baseline.name}: {baseline_seconds:.1f} s")

            auto = None
            if method == "auto":
                from aiflywheel.tasks.text_classification.auto import run_auto

                auto = run_auto(
                    recipe,
                    resolved,
                    train=train,
                    val=val,
                    test_rows=len(test),
                    baseline=baseline,
                    baseline_seconds=baseline_seconds,
                    baseline_fits_train=len(train) == len(full_train),
                    max_length=max_length,
                    length_fixed=recipe.model.max_length is not None,
                    work_dir=work_dir,
                    started=run_started,
                    report=report,
                )
                method, model, reason, max_length = (
                    auto.method,
                    auto.model,
                    auto.reason,
                    auto.max_length,
                )
                report(reason)
                model_seconds = next(c.seconds for c in auto.candidates if c.method == method)
            else:
                model = _build_model(recipe, method, resolved)
                if hasattr(model, "max_length") and model.max_length is None:
                    model.max_length = max_length
                group = distributed.current()
                on = f", {group.world_size} processes" if group and method != "head" else ""
                report(
                    f"training {recipe.model.name}/{method} on {len(train):,} rows "
                    f"(max_length {max_length}{on})"
                )
                started = time.perf_counter()
                _fit(model, method, train, val, work_dir)
                model_seconds = time.perf_counter() - started
            model.save(work_dir / "model")
            # Evaluate the model as loaded from disk: that is the one that will serve.
            model = reload_verified(
                model, work_dir / "model", test.texts, what="model", seed=recipe.seed
            )
            report(f"model trained in {model_seconds:.1f} s; evaluating on {len(test):,} test rows")

            cv = None
            if recipe.evaluate.cross_validation and method == "tfidf":
                report("cross-validation skipped: auto chose the baseline itself")
            elif recipe.evaluate.cross_validation:
                cv = _cross_validation(recipe, method, resolved, work_dir, parts, report)
            metrics = evaluate_against_baseline(
                model,
                baseline,
                test,
                recipe.evaluate,
                feature=recipe.feature,
                model_name=baseline.name if method == "tfidf" else f"{recipe.model.name}/{method}",
                model_seconds=model_seconds,
                baseline_seconds=baseline_seconds,
                seed=recipe.seed,
                cross_validation=cv,
            )
            pretrain = None
            if recipe.train.pretrain is not None and method == "tfidf":
                report("domain pre-training skipped: auto chose the TF-IDF baseline (no encoder)")
            elif recipe.train.pretrain is not None:
                from aiflywheel.tasks.text_classification.pretrain import with_and_without

                pretrain = with_and_without(
                    recipe,
                    resolved,
                    method,
                    max_length,
                    work_dir,
                    parts,
                    train,
                    baseline,
                    metrics,
                    model,
                    model_seconds,
                    report,
                )
                metrics = {**pretrain.metrics, "pretrain": pretrain.details}
        metrics["method_reason"] = reason
        if auto is not None:
            metrics["auto"] = {"chosen": method, "candidates": auto.table(), "plan": auto.plan}
            if method == "tfidf":
                metrics["verdict"] = (
                    f"{reason}; on the test split it scores macro-F1 "
                    f"{metrics['model']['metrics']['macro_f1']:.3f}"
                )
        metrics["dataset_version"] = data.dataset_version
        metrics["train_rows"] = len(train)
        metrics["baseline"]["train_rows"] = len(full_train)
        write_evaluation(metrics, work_dir)
        run.commit()
        model_version, baseline_version = _register(
            store, recipe, run.run_id, final_dir, version.id, method, baseline.name, metrics, report
        )
        if pretrain is not None:
            store.record_audit(
                recipe.feature,
                action="pretrain",
                actor=kind,
                decision=pretrain.preferred,
                reason=pretrain.reason,
                to_version=model_version,
                details={"run_id": run.run_id, **pretrain.details},
            )
        write_evaluation(metrics, final_dir)
        run.succeed(
            summary={
                "version": model_version,
                "baseline_version": baseline_version,
                **summarize(metrics),
            },
            dataset_version_id=version.id,
        )
    return TrainResult(
        run_id=run.run_id,
        run_dir=final_dir,
        version=model_version,
        method=method,
        method_reason=reason,
        metrics=metrics,
        baseline_version=baseline_version,
    )


def _register(
    store: Store,
    recipe: Recipe,
    run_id: str,
    run_dir: Path,
    dataset_version_id: int,
    method: str,
    baseline_name: str,
    metrics: dict[str, Any],
    report: Report,
) -> tuple[int, int | None]:
    """Register the model, and the baseline too when it is measurably better (so the gate
    and `flywheel promote` can put it in service like any classifier); their versions."""

    def add(folder: str, base_model: str, method_name: str, figures: dict[str, Any]) -> int:
        return store.register_model_version(
            recipe.feature,
            run_id=run_id,
            dataset_version_id=dataset_version_id,
            model_path=str(run_dir / folder),
            base_model=base_model,
            method=method_name,
            metrics=figures,
            recipe=recipe.model_dump(mode="json"),
        ).version

    pretrained = metrics.get("pretrain", {}).get("preferred") == "with-pretrain"
    base_model = recipe.model.name + ("+mlm" if pretrained else "")
    base_model = "tfidf" if method == "tfidf" else base_model
    model_version = add("model", base_model, method, summarize(metrics))
    metrics["version"] = f"v{model_version}"
    if not baseline_wins(metrics):
        return model_version, None
    baseline_version = add("baseline", "tfidf", baseline_name, summarize_baseline(metrics))
    metrics["baseline_version"] = f"v{baseline_version}"
    report(
        f"the {baseline_name} baseline beat {recipe.model.name}/{method}: registered as "
        f"v{baseline_version}, servable (`flywheel promote {recipe.feature}:{baseline_version}`)"
    )
    return model_version, baseline_version


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
        **_pretrain_summary(metrics.get("pretrain")),
    }


def _pretrain_summary(details: dict[str, Any] | None) -> dict[str, Any]:
    if not details:
        return {}
    return {
        "pretrain": {
            "preferred": details["preferred"],
            "gain_ci": details["comparison"]["ci"],
            "with_macro_f1": details["with"]["macro_f1"],
            "without_macro_f1": details["without"]["macro_f1"],
        }
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


def baseline_wins(metrics: dict[str, Any]) -> bool:
    """Whether the baseline is measurably better: the model's gain CI lies below zero."""
    ci = metrics["comparison"].get("ci") or [0.0, 0.0]
    return float(ci[1]) < 0


def summarize_baseline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures of the baseline registered as its own version (it beat the model)."""
    model, baseline, comparison = metrics["model"], metrics["baseline"], metrics["comparison"]
    lo, hi = comparison["ci"]
    gain = -float(comparison["diff"]) * 100
    return {
        "is_baseline": True,
        "macro_f1": baseline["metrics"]["macro_f1"],
        "macro_f1_ci": baseline["macro_f1_ci"],
        "accuracy": baseline["metrics"]["accuracy"],
        "compared_with": model["name"],
        "compared_macro_f1": model["metrics"]["macro_f1"],
        "gain_ci": [-hi, -lo],
        "test_rows": metrics["test_rows"],
        "train_seconds": baseline["train_seconds"],
        "verdict": (
            f"the {baseline['name']} baseline beats {model['name']} by {gain:+.1f} macro-F1 "
            f"points (95% CI {-hi * 100:+.1f} to {-lo * 100:+.1f}); it is registered as a "
            "servable version"
        ),
    }
