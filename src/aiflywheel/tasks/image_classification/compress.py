"""``flywheel compress`` for an image version: ONNX (fp32) and int8 variants, each
evaluated on the parent's frozen test split, timed, put through the same compress gate
as text variants (``compress.gate_variant``: macro-F1 drop and agreement) and registered
(candidate, or rejected). Layout: ``runs/<feature>/<run id>/<variant>/{model, splits,
data_report.json, metrics.json, gate.json}`` and ``compression.json``.
"""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.compress.measure import folder_bytes
from aiflywheel.compress.stage import CompressResult, gate_variant
from aiflywheel.core.runs import feature_run
from aiflywheel.errors import DataError, ModelError, RecipeError
from aiflywheel.files import write_json_atomic
from aiflywheel.metrics.classification import classification_metrics, paired_bootstrap
from aiflywheel.recipe import parse_recipe
from aiflywheel.tasks.image_classification.models import ImageClassifier, load_image_model
from aiflywheel.tasks.image_classification.train import read_splits

SUPPORTED = ("onnx", "int8")


def speed(model, images: np.ndarray, model_dir: Path, batch_size: int = 32) -> dict[str, Any]:
    """Size, latency at batch 1 and ``batch_size`` (ms), images/s: the text table's columns."""
    model.predict_proba(images[:batch_size])
    single = []
    for image in images:
        started = time.perf_counter()
        model.predict_proba(image[None])
        single.append(time.perf_counter() - started)
    rng = np.random.default_rng(0)
    batched = []
    for _ in range(max(10, len(images) // batch_size)):
        batch = images[rng.choice(len(images), batch_size)]
        started = time.perf_counter()
        model.predict_proba(batch)
        batched.append(time.perf_counter() - started)
    b1, bn = np.array(single) * 1000, np.array(batched) * 1000
    size = folder_bytes(model_dir)
    return {
        "size_bytes": size,
        "size_mb": round(size / 1e6, 3),
        "latency_ms": {
            "batch_1": {
                "p50": round(float(np.percentile(b1, 50)), 3),
                "p95": round(float(np.percentile(b1, 95)), 3),
            },
            "batch_32": {
                "p50": round(float(np.percentile(bn, 50)), 3),
                "p95": round(float(np.percentile(bn, 95)), 3),
            },
        },
        "throughput_per_s": round(batch_size * len(batched) / float(np.sum(batched)), 2),
    }


def compress_image_version(
    feature: str, version: int | None = None, *, store, settings, recipe=None, report
) -> CompressResult:
    from aiflywheel.compress.onnx import require_onnx_stack
    from aiflywheel.tasks.image_classification.onnx_model import (
        OnnxImageClassifier,
        export_onnx,
        quantize_int8,
    )

    row = store.get_model_version(feature, version)
    model_dir = Path(row.model_path)
    if recipe is None:
        recipe = parse_recipe(row.recipe, origin=f"stored recipe of {feature} v{row.version}")
    elif recipe.feature != feature:
        raise RecipeError(f"the recipe declares feature {recipe.feature!r}, not {feature!r}")
    parent = load_image_model(model_dir)
    if not isinstance(parent, ImageClassifier):
        origin = row.metrics.get("parent_version")
        raise ModelError(
            f"{feature} v{row.version} is a {row.method} model ({row.base_model}); compress "
            "needs a trained CNN/ResNet version"
            + (f"; it is already a compressed variant of v{origin}" if origin else "")
        )
    config = recipe.compress
    run_dir = model_dir.parent
    if not (run_dir / "splits" / "test.safetensors").is_file():
        raise DataError(f"{feature} v{row.version}: {run_dir / 'splits'} holds no test split")
    parts = read_splits(run_dir)
    test = parts["test"]
    chosen = [v for v in config.variants if v in SUPPORTED]
    skipped = [
        {"variant": v, "reason": "image models are compressed to onnx and int8 only"}
        for v in config.variants
        if v not in SUPPORTED
    ]
    require_onnx_stack()
    labels = sorted(set(parent.labels) | set(test.labels))
    y_true = list(test.labels)
    timed = test.pixels[: config.latency_texts]

    def predicted(model) -> list[str]:
        return [p.label for p in model.predict(test.pixels)]

    ref_pred = predicted(parent)
    ref_f1 = classification_metrics(y_true, ref_pred, None, labels)["macro_f1"]
    report(f"timing v{row.version} (torch) on {len(timed)} test images")
    ref_speed = speed(parent, timed, model_dir)
    rows: list[dict[str, Any]] = [
        {
            "variant": "parent",
            "version": row.version,
            "method": row.method,
            "status": row.status,
            "precision": "fp32",
            "runtime": "torch",
            **ref_speed,
            "macro_f1": ref_f1,
            "macro_f1_change_points": 0.0,
            "macro_f1_change_ci_points": [0.0, 0.0],
            "agreement": 1.0,
            "gate": None,
        }
    ]
    with feature_run(store, settings.runs_dir, feature, "compress") as run:
        work_dir, final_dir = run.work_dir, run.final_dir
        calibration = parts["train"].pixels[:256]
        for name in chosen:
            variant_dir = work_dir / name
            started = time.perf_counter()
            fp32 = work_dir / "onnx" / "model"
            if not (fp32 / "model.onnx").is_file():
                export_onnx(parent, fp32)
            if name == "int8":
                quantize_int8(fp32, variant_dir / "model", calibration)
            build_seconds = time.perf_counter() - started
            model = OnnxImageClassifier.load(variant_dir / "model", threads=config.threads)
            pred = predicted(model)
            change = paired_bootstrap(
                y_true,
                pred,
                ref_pred,
                labels,
                n_resamples=recipe.evaluate.bootstrap_resamples,
                seed=recipe.seed,
            )
            points = change["diff"] * 100
            ci = [change["ci"][0] * 100, change["ci"][1] * 100]
            agreement = float(np.mean([a == b for a, b in zip(pred, ref_pred, strict=True)]))
            gate = gate_variant(
                points, ci, agreement=agreement, config=config, parent_version=row.version
            )
            report(f"timing {name} on {len(timed)} test images")
            f1 = classification_metrics(y_true, pred, None, labels)["macro_f1"]
            rows.append(
                {
                    "variant": name,
                    "version": None,
                    "method": f"{row.method}+{name}",
                    "status": "candidate" if gate["passed"] else "rejected",
                    "precision": model.precision,
                    "runtime": "onnxruntime",
                    **speed(model, timed, variant_dir / "model"),
                    "macro_f1": f1,
                    "macro_f1_change_points": points,
                    "macro_f1_change_ci_points": ci,
                    "agreement": agreement,
                    "build_seconds": round(build_seconds, 2),
                    "parent_version": row.version,
                    "gate": gate,
                }
            )
            shutil.copytree(run_dir / "splits", variant_dir / "splits", dirs_exist_ok=True)
            if (run_dir / "data_report.json").is_file():
                shutil.copy2(run_dir / "data_report.json", variant_dir / "data_report.json")
            report(
                f"{name}: {'passes' if gate['passed'] else 'REJECTED by'} the gate: "
                f"{gate['reason']}"
            )
        table = {
            "feature": feature,
            "parent_version": row.version,
            "run_id": run.run_id,
            "machine": {"threads": config.threads, "platform": platform.platform()},
            "max_macro_f1_drop": config.max_macro_f1_drop,
            "rows": rows,
            "skipped": skipped,
        }
        write_json_atomic(work_dir / "compression.json", table)
        run.commit()
        for item in rows[1:]:
            name = item["variant"]
            metrics = {
                "macro_f1": item["macro_f1"],
                "baseline_name": row.metrics.get("baseline_name"),
                "baseline_macro_f1": row.metrics.get("baseline_macro_f1"),
                "beats_baseline": row.metrics.get("beats_baseline"),
                "test_rows": len(test),
                "parent_version": row.version,
                "variant": name,
                "precision": item["precision"],
                "runtime": "onnxruntime",
                **{
                    key: item[key]
                    for key in (
                        "size_bytes",
                        "size_mb",
                        "latency_ms",
                        "throughput_per_s",
                        "macro_f1_change_points",
                        "macro_f1_change_ci_points",
                        "agreement",
                        "gate",
                    )
                },
            }
            registered = store.register_model_version(
                feature,
                run_id=run.run_id,
                dataset_version_id=row.dataset_version_id,
                model_path=str(final_dir / name / "model"),
                base_model=row.base_model,
                method=item["method"],
                metrics=metrics,
                recipe=recipe.model_dump(mode="json"),
                status=item["status"],
            )
            item["version"] = registered.version
            write_json_atomic(final_dir / name / "gate.json", item["gate"])
            write_json_atomic(final_dir / name / "metrics.json", {**metrics, **item})
            store.record_audit(
                feature,
                action="compress",
                actor="flywheel compress",
                decision=item["status"],
                reason=f"{name}: {item['gate']['reason']}",
                from_version=row.version,
                to_version=registered.version,
                details={"variant": name, "checks": item["gate"]["checks"], "run_id": run.run_id},
            )
            report(f"{name}: registered as {feature} v{registered.version} ({item['status']})")
        write_json_atomic(final_dir / "compression.json", table)
        run.succeed(
            summary={
                "parent_version": row.version,
                "versions": {r["variant"]: r["version"] for r in rows[1:]},
            }
        )
    return CompressResult(
        feature=feature,
        parent_version=row.version,
        run_id=run.run_id,
        run_dir=final_dir,
        rows=rows,
        skipped=skipped,
    )
