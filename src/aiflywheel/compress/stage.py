"""The compress stage: build the recipe's variants of one fine-tuned version, then
evaluate, time, gate and register each (see ``aiflywheel.compress`` for the layout)."""

from __future__ import annotations

import json
import platform
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from aiflywheel.compress.measure import measure
from aiflywheel.compress.onnx import require_onnx_stack
from aiflywheel.compress.prune import check_keep_layers, layer_count
from aiflywheel.compress.variants import SCRATCH, VARIANTS, BuildContext, VariantSkipped
from aiflywheel.core.gate import Gate, at_least, at_most
from aiflywheel.core.runs import feature_run
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import DataError, ModelError, RecipeError
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.metrics.classification import classification_metrics, paired_bootstrap
from aiflywheel.recipe import Recipe, parse_recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.text_classification.evaluate import (
    evaluate_against_baseline,
    write_evaluation,
)
from aiflywheel.tasks.text_classification.models.base import read_manifest
from aiflywheel.tasks.text_classification.models.onnx_classifier import (
    OnnxClassifier,
    available_cores,
)
from aiflywheel.tasks.text_classification.models.roundtrip import reload_verified

Report = Callable[[str], None]

TABLE_COLUMNS = (
    "variant",
    "version",
    "size MB",
    "b1 p50 ms",
    "b1 p95 ms",
    "b32 p50 ms",
    "b32 p95 ms",
    "texts/s",
    "macro-F1",
    "change",
    "agreement",
    "gate",
)


def gate_variant(
    change_points: float,
    ci_points: Sequence[float],
    *,
    agreement: float,
    config,
    parent_version: int,
) -> dict[str, Any]:
    """The compress gate: macro-F1 drop and agreement against the parent, as checks."""
    drop = round(-change_points, 6)
    ci = f"95% CI {ci_points[0]:+.2f} to {ci_points[1]:+.2f}"
    max_drop, min_agreement = config.max_macro_f1_drop, config.min_agreement
    gate = Gate(
        [
            at_most(
                f"macro-F1 drop vs v{parent_version} (compress.max_macro_f1_drop)",
                drop,
                max_drop,
                unit="points",
                note=ci,
            ),
            at_least(
                f"agreement with v{parent_version} (compress.min_agreement)",
                round(agreement, 6),
                min_agreement,
            ),
        ]
    )
    failures = []
    if not gate.checks[0].passed:
        failures.append(
            f"macro-F1 drops {drop:.2f} points vs v{parent_version} ({ci}), more than the "
            f"allowed {max_drop:g} (compress.max_macro_f1_drop)"
        )
    if not gate.checks[1].passed:
        failures.append(
            f"it agrees with v{parent_version} on {agreement:.1%} of test rows, below "
            f"{min_agreement:.0%} (compress.min_agreement)"
        )
    reason = "; ".join(failures) or (
        f"macro-F1 {change_points:+.2f} points vs v{parent_version} ({ci}), within the "
        f"allowed drop of {max_drop:g}; agrees on {agreement:.1%}"
    )
    return {
        "passed": gate.passed,
        "reason": reason,
        "checks": gate.to_json(),
        "max_macro_f1_drop": max_drop,
    }


@dataclass
class CompressResult:
    """The parent and its variants as measured, and where everything was written."""

    feature: str
    parent_version: int
    run_id: str
    run_dir: Path
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def compression_json(self) -> Path:
        return self.run_dir / "compression.json"

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """The variant rows by name (the parent's row left out)."""
        return {row["variant"]: row for row in self.rows if row["variant"] != "parent"}

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Column names and one row of strings per model, the parent first."""
        lines = []
        for row in self.rows:
            latency = row["latency_ms"]
            gate = row.get("gate")
            lines.append(
                [
                    row["variant"],
                    f"v{row['version']}",
                    f"{row['size_mb']:.1f}",
                    f"{latency['batch_1']['p50']:.1f}",
                    f"{latency['batch_1']['p95']:.1f}",
                    f"{latency['batch_32']['p50']:.1f}",
                    f"{latency['batch_32']['p95']:.1f}",
                    f"{row['throughput_per_s']:.0f}",
                    f"{row['macro_f1']:.4f}",
                    f"{row['macro_f1_change_points']:+.2f}",
                    f"{row['agreement']:.1%}",
                    "-" if gate is None else ("pass" if gate["passed"] else "REJECTED"),
                ]
            )
        return list(TABLE_COLUMNS), lines


@dataclass
class Parent:
    """The fine-tuned version being compressed, and the recipe its variants follow."""

    feature: str
    version: int
    row: Any
    model_dir: Path
    run_dir: Path
    recipe: Recipe


def _parent(store: Store, feature: str, version: int | None, recipe: Recipe | None) -> Parent:
    row = store.get_model_version(feature, version)
    model_dir = Path(row.model_path)
    if not model_dir.is_dir():
        raise ModelError(f"{feature} v{row.version}: model folder {model_dir} is missing")
    kind = read_manifest(model_dir)["kind"]
    if kind != "finetuned":
        origin = row.metrics.get("parent_version")
        hint = f"; it is already a compressed variant of v{origin}" if origin else ""
        raise ModelError(
            f"{feature} v{row.version} is a {kind!r} model ({row.base_model}/{row.method}); "
            f"compress needs a fine-tuned transformer (model.method finetune or lora){hint}"
        )
    if recipe is None:
        recipe = parse_recipe(row.recipe, origin=f"stored recipe of {feature} v{row.version}")
    elif recipe.feature != feature:
        raise RecipeError(f"the recipe declares feature {recipe.feature!r}, not {feature!r}")
    run_dir = model_dir.parent
    for needed in ("splits/train.jsonl", "splits/val.jsonl", "splits/test.jsonl", "baseline"):
        if not (run_dir / needed).exists():
            raise DataError(
                f"{feature} v{row.version}: {run_dir / needed} is missing; compress evaluates "
                "variants on the parent's frozen splits against its baseline"
            )
    return Parent(feature, row.version, row, model_dir, run_dir, recipe)


def _method(parent: Parent, variant: str) -> str:
    tag = VARIANTS[variant].tag
    return f"{parent.row.method}+{tag(parent.recipe.compress) if tag else variant}"


def _copy_run_data(parent_run: Path, variant_dir: Path, recipe: Recipe) -> None:
    shutil.copytree(parent_run / "splits", variant_dir / "splits", dirs_exist_ok=True)
    if (parent_run / "dataset.jsonl").is_file():
        shutil.copy2(parent_run / "dataset.jsonl", variant_dir / "dataset.jsonl")
    write_text_atomic(
        variant_dir / "recipe.yaml",
        yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False),
    )


def _scores(model, test: Dataset) -> tuple[list[str], np.ndarray]:
    proba = model.predict_proba(test.texts)
    return [model.labels[int(i)] for i in proba.argmax(axis=1)], proba


def compress_version(
    feature: str,
    version: int | None = None,
    *,
    store: Store,
    settings: Settings,
    recipe: Recipe | None = None,
    report: Report = lambda _: None,
) -> CompressResult:
    """Build, evaluate, time, gate and register the variants of one fine-tuned version.

    ``version`` defaults to the champion, else the newest candidate; ``recipe`` defaults
    to the one the version was trained with (its ``compress`` section lists the variants).
    See ``aiflywheel.compress`` for what is written where.
    """
    from aiflywheel.tasks.text_classification.models.encoding import torch_threads

    parent = _parent(store, feature, version, recipe)
    recipe = parent.recipe
    config = recipe.compress
    chosen = [VARIANTS[name] for name in VARIANTS if name in config.variants]
    if any(variant.onnx for variant in chosen):
        require_onnx_stack()
    checked = set()
    for variant in chosen:
        if variant.keep_layers and variant.keep_layers not in checked:
            checked.add(variant.keep_layers)
            check_keep_layers(
                getattr(config, variant.keep_layers),
                layer_count(parent.model_dir),
                name=f"compress.{variant.keep_layers}",
                error=RecipeError,
            )
    with feature_run(
        store,
        settings.runs_dir,
        feature,
        "compress",
        work_name=".compress",
        scratch=SCRATCH,
    ) as run:
        run_id, work_dir, final_dir = run.run_id, run.work_dir, run.final_dir
        with torch_threads(config.threads):
            rows, skipped, variants = _build_and_judge(parent, work_dir, report)
        table = {
            "feature": feature,
            "parent_version": parent.version,
            "run_id": run_id,
            "machine": {
                "cores": available_cores(),
                "threads": config.threads or available_cores(),
                "platform": platform.platform(),
                "processor": platform.machine(),
            },
            "max_macro_f1_drop": config.max_macro_f1_drop,
            "rows": rows,
            "skipped": skipped,
        }
        write_json_atomic(work_dir / "compression.json", table)
        run.commit()

        versions: dict[str, int] = {}
        for row in rows[1:]:
            name = row["variant"]
            variant_dir = final_dir / name
            metrics = variants[name]
            registered = store.register_model_version(
                feature,
                run_id=run_id,
                dataset_version_id=parent.row.dataset_version_id,
                model_path=str(variant_dir / "model"),
                base_model=parent.row.base_model,
                method=row["method"],
                metrics=_stored_metrics(metrics, row),
                recipe=recipe.model_dump(mode="json"),
                status="candidate" if row["gate"]["passed"] else "rejected",
            )
            row["version"] = registered.version
            row["status"] = registered.status
            versions[name] = registered.version
            metrics["version"] = f"v{registered.version}"
            write_evaluation(metrics, variant_dir)
            write_json_atomic(variant_dir / "gate.json", row["gate"])
            verdict = "candidate" if row["gate"]["passed"] else "rejected"
            store.record_audit(
                feature,
                action="compress",
                actor="flywheel compress",
                decision=verdict,
                reason=f"{name}: {row['gate']['reason']}",
                from_version=parent.version,
                to_version=registered.version,
                details={"variant": name, "checks": row["gate"]["checks"], "run_id": run_id},
            )
            report(f"{name}: registered as {feature} v{registered.version} ({verdict})")
        table["rows"] = rows
        write_json_atomic(final_dir / "compression.json", table)
        run.succeed(
            summary={
                "parent_version": parent.version,
                "versions": versions,
                "rejected": [r["variant"] for r in rows[1:] if not r["gate"]["passed"]],
                "skipped": [s["variant"] for s in skipped],
            },
            dataset_version_id=parent.row.dataset_version_id,
        )
    return CompressResult(
        feature=feature,
        parent_version=parent.version,
        run_id=run_id,
        run_dir=final_dir,
        rows=rows,
        skipped=skipped,
    )


def _stored_metrics(metrics: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    from aiflywheel.tasks.text_classification.train import summarize

    keep = (
        "parent_version",
        "variant",
        "precision",
        "runtime",
        "quantization",
        "layers",
        "size_bytes",
        "size_mb",
        "latency_ms",
        "throughput_per_s",
        "macro_f1_change_points",
        "macro_f1_change_ci_points",
        "agreement",
        "max_probability_diff",
        "parent",
        "gate",
    )
    return {**summarize(metrics), **{key: row[key] for key in keep}}


@dataclass
class _Reference:
    """The parent as every variant is judged against it: the frozen test split, its
    baseline, the parent's predictions, speed and macro-F1."""

    test: Dataset
    baseline: Any
    baseline_seconds: float
    parent_metrics: dict[str, Any]
    y_true: list[str]
    labels: list[str]
    predicted: list[str]
    proba: np.ndarray
    timed: list[str]
    speed: dict[str, Any]
    layers: int
    macro_f1: float


def _build_and_judge(parent: Parent, work_dir: Path, report: Report):
    """Rows for compression.json (parent first), skipped variants, and each variant's metrics."""
    recipe, config = parent.recipe, parent.recipe.compress
    splits = parent.run_dir / "splits"
    source, ref = _reference(parent, report)
    rows: list[dict[str, Any]] = [
        {
            "variant": "parent",
            "version": parent.version,
            "method": parent.row.method,
            "status": parent.row.status,
            "precision": "fp32",
            "runtime": "torch",
            "layers": ref.layers,
            **ref.speed,
            "macro_f1": ref.macro_f1,
            "macro_f1_change_points": 0.0,
            "macro_f1_change_ci_points": [0.0, 0.0],
            "agreement": 1.0,
            "max_probability_diff": 0.0,
            "gate": None,
        }
    ]
    skipped: list[dict[str, str]] = []
    variants: dict[str, dict[str, Any]] = {}

    train = Dataset.from_jsonl(splits / "train.jsonl")
    val = Dataset.from_jsonl(splits / "val.jsonl")
    # int8 is checked against fp32 on validation texts: the test split only judges.
    agreement_texts = val.texts or random.Random(recipe.seed).sample(
        train.texts, min(200, len(train))
    )
    ctx = BuildContext(parent, source, work_dir, train, val, ref.test, agreement_texts, report)
    for name in config.variants:
        model_dir = work_dir / name / "model"
        started = time.perf_counter()
        try:
            model = VARIANTS[name].build(ctx, model_dir)
        except VariantSkipped as skip:
            report(f"{name} skipped: {skip.reason}")
            skipped.append({"variant": name, "reason": skip.reason})
            continue
        build_seconds = time.perf_counter() - started
        row, metrics = _judge(parent, name, model, model_dir, build_seconds, ref, report)
        rows.append(row)
        variants[name] = metrics
    return rows, skipped, variants


def _reference(parent: Parent, report: Report) -> tuple[Any, _Reference]:
    """The parent loaded (a ``FinetunedClassifier``) and judged once on the test split."""
    from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline
    from aiflywheel.tasks.text_classification.models.finetuned import FinetunedClassifier

    recipe, config = parent.recipe, parent.recipe.compress
    splits = parent.run_dir / "splits"
    test = Dataset.from_jsonl(splits / "test.jsonl")
    if not len(test):
        raise DataError(f"{splits / 'test.jsonl'} is empty; compress needs test rows to judge by")
    baseline = TfidfBaseline.load(parent.run_dir / "baseline")
    parent_metrics_file = parent.run_dir / "metrics.json"
    parent_metrics = (
        json.loads(parent_metrics_file.read_text(encoding="utf-8"))
        if parent_metrics_file.is_file()
        else {}
    )
    report(
        f"loading {parent.feature} v{parent.version} ({parent.row.base_model}/{parent.row.method})"
    )
    source = FinetunedClassifier.load(parent.model_dir)
    y_true = [r.label for r in test]
    labels = sorted(set(source.labels) | set(baseline.labels) | set(y_true))
    predicted, proba = _scores(source, test)
    timed = random.Random(recipe.seed).sample(test.texts, min(config.latency_texts, len(test)))
    report(f"timing v{parent.version} (torch) on {len(timed)} test texts")
    speed = measure(source, timed, model_dir=parent.model_dir, seed=recipe.seed).to_json()
    return source, _Reference(
        test=test,
        baseline=baseline,
        baseline_seconds=float(parent_metrics.get("baseline", {}).get("train_seconds", 0.0)),
        parent_metrics=parent_metrics,
        y_true=y_true,
        labels=labels,
        predicted=predicted,
        proba=proba,
        timed=timed,
        speed=speed,
        layers=layer_count(parent.model_dir),
        macro_f1=classification_metrics(y_true, predicted, None, labels)["macro_f1"],
    )


def _judge(
    parent: Parent,
    name: str,
    model,
    model_dir: Path,
    build_seconds: float,
    ref: _Reference,
    report: Report,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One variant's compression.json row and metrics, evaluated as loaded from its folder
    (that is what registers and serves); writes its run folder's evaluation and data."""
    recipe, config = parent.recipe, parent.recipe.compress
    test = ref.test
    variant_dir = model_dir.parent
    model = reload_verified(
        model,
        model_dir,
        test.texts,
        what=f"{name} variant",
        seed=recipe.seed,
        loaded=(
            OnnxClassifier.load(model_dir, threads=config.threads)
            if isinstance(model, OnnxClassifier)
            else None
        ),
    )
    method = _method(parent, name)
    report(f"evaluating {name} on {len(test)} test rows")
    metrics = evaluate_against_baseline(
        model,
        ref.baseline,
        test,
        recipe.evaluate,
        feature=parent.feature,
        model_name=f"{recipe.model.name}/{method}",
        model_seconds=build_seconds,
        baseline_seconds=ref.baseline_seconds,
        seed=recipe.seed,
    )
    predicted, proba = _scores(model, test)
    change = paired_bootstrap(
        ref.y_true,
        predicted,
        ref.predicted,
        ref.labels,
        n_resamples=recipe.evaluate.bootstrap_resamples,
        seed=recipe.seed,
    )
    report(f"timing {name} on {len(ref.timed)} test texts")
    speed = measure(model, ref.timed, model_dir=model_dir, seed=recipe.seed).to_json()
    change_points = change["diff"] * 100
    ci_points = [change["ci"][0] * 100, change["ci"][1] * 100]
    agreement = float(np.mean([a == b for a, b in zip(predicted, ref.predicted, strict=True)]))
    gate = gate_variant(
        change_points,
        ci_points,
        agreement=agreement,
        config=config,
        parent_version=parent.version,
    )
    layers = VARIANTS[name].layers
    row = {
        "variant": name,
        "version": None,
        "method": method,
        "status": "candidate" if gate["passed"] else "rejected",
        "precision": getattr(model, "precision", "fp32"),
        "runtime": "onnxruntime" if isinstance(model, OnnxClassifier) else "torch",
        "quantization": getattr(model, "quantization", None),
        "layers": layers(config) if layers else ref.layers,
        **speed,
        "macro_f1": metrics["model"]["metrics"]["macro_f1"],
        "macro_f1_change_points": change_points,
        "macro_f1_change_ci_points": ci_points,
        "agreement": agreement,
        "max_probability_diff": float(np.abs(proba - ref.proba).max()),
        "build_seconds": round(build_seconds, 2),
        "parent_version": parent.version,
        "parent": {
            key: ref.speed[key]
            for key in ("size_bytes", "size_mb", "latency_ms", "throughput_per_s")
        }
        | {"macro_f1": ref.macro_f1},
        "gate": gate,
    }
    report(f"{name}: {'passes' if gate['passed'] else 'REJECTED by'} the gate: {gate['reason']}")
    metrics["compression"] = {k: v for k, v in row.items() if k not in ("version", "status")}
    metrics["method_reason"] = f"{name} variant of v{parent.version}"
    for key in ("dataset_version", "train_rows"):
        if key in ref.parent_metrics:
            metrics[key] = ref.parent_metrics[key]
    _copy_run_data(parent.run_dir, variant_dir, recipe)
    write_evaluation(metrics, variant_dir)
    return row, metrics


__all__ = ["CompressResult", "Parent", "compress_version", "gate_variant"]
