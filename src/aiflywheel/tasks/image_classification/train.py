"""Train an image feature: data stage -> pixel baseline -> CNN/ResNet -> evaluate -> register.

``train_image_feature(recipe, ...)`` works in one run folder (``runs/<feature>/<run id>/``)::

    splits/{train,val,test}.{safetensors,jsonl} labels.json   the frozen splits
    data_report.{json,html}                                   drops, duplicates, balance
    baseline/  model/                                         manifest.json + safetensors
    metrics.json  report.html                                 model vs baseline on test
    gan_grid.png                                              with train.augment.gan
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from aiflywheel.core.runs import feature_run
from aiflywheel.errors import DataError
from aiflywheel.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from aiflywheel.recipe import Recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.image_classification.dataset import ImageSet
from aiflywheel.tasks.image_classification.evaluate import data_uri, evaluate_against_baseline
from aiflywheel.tasks.image_classification.models import (
    ImageClassifier,
    PixelBaseline,
    load_image_model,
)
from aiflywheel.tasks.image_classification.report_html import write_report

Report = Callable[[str], None]
PARTS = ("train", "val", "test")


@dataclass
class ImageTrainResult:
    run_id: str
    run_dir: Path
    version: int
    metrics: dict[str, Any]
    baseline_version: int | None = None

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"


def read_splits(folder: Path) -> dict[str, ImageSet]:
    return {name: ImageSet.load(Path(folder) / "splits" / name) for name in PARTS}


def data_stage(recipe: Recipe, report: Report) -> Callable[[Path], dict[str, Any]]:
    from aiflywheel.tasks.image_classification.data import prepare_images

    def prepare(work_dir: Path) -> dict[str, Any]:
        write_text_atomic(
            work_dir / "recipe.yaml",
            yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False),
        )
        return prepare_images(recipe, work_dir, report)

    return prepare


def _sample(part: ImageSet, limit: int | None, seed: int) -> ImageSet:
    if limit is None or len(part) <= limit:
        return part
    rng = np.random.default_rng(seed)
    return part.take(sorted(rng.choice(len(part), size=limit, replace=False).tolist()))


def _gan_images(recipe: Recipe, train: ImageSet, plain: ImageClassifier, report: Report):
    """Synthetic training images from a conditional DCGAN (``train.augment.gan``)."""
    from aiflywheel.tasks.image_classification.gan import augment_with_gan

    gan = recipe.train.augment.gan
    labels = plain.labels
    index = np.array([labels.index(v) for v in train.labels], dtype=np.int64)
    result = augment_with_gan(
        train.pixels,
        index,
        num_classes=len(labels),
        per_class=gan.per_class,
        seed=recipe.seed,
        epochs=gan.epochs,
        time_budget_s=gan.time_budget_s,
        features=plain.features,
        report=report,
    )
    synthetic = ImageSet(
        result.pixels.astype(np.uint8),
        [labels[int(i)] for i in result.labels],
        [f"gan-{i}" for i in range(len(result.labels))],
        [{"synthetic": True} for _ in result.labels],
    )
    return synthetic, result


def _gan_candidate(recipe, parts, train, plain, plain_seconds, fit, work_dir, report):
    """Train a second model with GAN images added; the gate (on the real test split) says
    which of the two is registered. Both stay in the run folder."""
    from aiflywheel.tasks.image_classification.compare import compare_versions

    synthetic, result = _gan_images(recipe, train, plain, report)
    write_bytes_atomic(work_dir / "gan_grid.png", result.grid_png)
    combined = train.concat(synthetic)
    # The same number of optimizer steps as the plain model: more images per epoch must
    # not pass for a better model just by training it longer.
    epochs = recipe.train.epochs * len(train) / len(combined)
    report(
        f"training {recipe.image.architecture} again with {len(synthetic):,} GAN images "
        f"({epochs:.2f} epochs: as many steps as the plain model)"
    )
    augmented, seconds = fit(combined, epochs)
    plain.save(work_dir / "model_without_gan")
    augmented.save(work_dir / "model_with_gan")
    gate = compare_versions(
        load_image_model(work_dir / "model_without_gan"),
        load_image_model(work_dir / "model_with_gan"),
        parts["test"],
        parts["test"].take([]),
        recipe,
        kept="the GAN did not help; registered the model trained without it",
    )
    report(f"GAN-augmented vs plain: {gate.reason}")
    info = {
        "per_class": recipe.train.augment.gan.per_class,
        "images": len(synthetic),
        "frechet_distance": float(result.frechet_distance),
        "distance_features": result.distance_features,
        "seconds": float(result.seconds),
        "grid": data_uri(result.grid_png),
        "gate": gate.to_json(),
        "registered": "with GAN images" if gate.passed else "without GAN images",
    }
    total = plain_seconds + seconds + float(result.seconds)
    return (augmented if gate.passed else plain), total, info


def train_image_feature(
    recipe: Recipe,
    *,
    store: Store,
    settings: Settings,
    report: Report = lambda _: None,
    prepare: Callable[[Path], dict[str, Any]] | None = None,
    kind: str = "train",
) -> ImageTrainResult:
    """Train and register a candidate version of an image feature (see module doc)."""
    import torch

    config = recipe.image
    store.upsert_feature(
        recipe.feature, recipe.task, recipe.description, recipe.model_dump(mode="json")
    )
    with feature_run(store, settings.runs_dir, recipe.feature, kind) as run:
        work_dir, final_dir = run.work_dir, run.final_dir
        report("checking images")
        data_report = (prepare or data_stage(recipe, report))(work_dir)
        parts = read_splits(work_dir)
        if not len(parts["val"]):
            raise DataError("the validation split is empty; set split.val above 0 (e.g. 0.1)")
        everything = parts["train"].concat(parts["val"]).concat(parts["test"])
        split_hash = "".join(parts[n].content_hash()[:8] for n in PARTS)
        version = store.record_dataset_version(
            recipe.feature,
            content_hash=everything.content_hash(),
            split_version=split_hash,
            rows=len(everything),
            labels=data_report["labels"]["counts"],
            source=data_report["source"],
            path=str(final_dir / "splits"),
        )
        labels = sorted(set(everything.labels))
        full_train = parts["train"]
        train = _sample(full_train, recipe.train.max_train_samples, recipe.seed)
        threads = recipe.train.threads
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            report(f"training the pixel baseline on {len(full_train):,} images")
            started = time.perf_counter()
            baseline = PixelBaseline(labels, side=config.baseline_size, seed=recipe.seed)
            baseline.fit(full_train.pixels, full_train.labels)
            baseline_seconds = time.perf_counter() - started
            baseline.save(work_dir / "baseline")
            baseline = load_image_model(work_dir / "baseline")

            def fit(images: ImageSet, epochs: float | None = None) -> tuple[ImageClassifier, float]:
                model = ImageClassifier(
                    labels,
                    architecture=config.architecture,
                    size=config.size,
                    channels=config.channels,
                    width=config.width,
                )
                began = time.perf_counter()
                model.fit(
                    images.pixels,
                    images.labels,
                    val_x=parts["val"].pixels,
                    val_y=parts["val"].labels,
                    epochs=epochs or recipe.train.epochs,
                    batch_size=recipe.train.batch_size,
                    learning_rate=recipe.train.learning_rate or config.learning_rate,
                    augment=recipe.train.augment,
                    seed=recipe.seed,
                    report=report,
                )
                return model, time.perf_counter() - began

            report(f"training {config.architecture} on {len(train):,} images")
            model, model_seconds = fit(train)
            gan_info = None
            augment = recipe.train.augment
            if augment is not None and augment.gan is not None:
                model, model_seconds, gan_info = _gan_candidate(
                    recipe, parts, train, model, model_seconds, fit, work_dir, report
                )
            model.save(work_dir / "model")
            model = load_image_model(work_dir / "model")  # evaluate what will serve
            report(f"model trained in {model_seconds:.1f} s; evaluating on {len(parts['test'])}")
            metrics = evaluate_against_baseline(
                model,
                baseline,
                parts["test"],
                resamples=recipe.evaluate.bootstrap_resamples,
                seed=recipe.seed,
                min_slice_rows=recipe.evaluate.min_slice_rows,
                mistakes=recipe.evaluate.explain_mistakes,
                model_seconds=model_seconds,
                baseline_seconds=baseline_seconds,
            )
        finally:
            torch.set_num_threads(previous)
        metrics["gan"] = gan_info
        metrics["train_rows"] = len(train)
        metrics["dataset_version"] = version.content_hash
        write_json_atomic(work_dir / "metrics.json", _without_images(metrics))
        write_report(metrics, work_dir / "report.html", title=f"{recipe.feature}: image model")
        run.commit()
        model_version, baseline_version = _register(
            store, recipe, run.run_id, final_dir, version.id, metrics, report
        )
        write_json_atomic(final_dir / "metrics.json", _without_images(metrics))
        run.succeed(
            summary={
                "version": model_version,
                "baseline_version": baseline_version,
                **summarize(metrics),
            },
            dataset_version_id=version.id,
        )
    return ImageTrainResult(run.run_id, final_dir, model_version, metrics, baseline_version)


def _without_images(metrics: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(metrics))
    for item in out.get("mistakes", []):
        item.pop("image", None)
        item.pop("saliency", None)
    if out.get("gan"):
        out["gan"].pop("grid", None)
    return out


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    model, baseline = metrics["model"], metrics["baseline"]
    return {
        "macro_f1": model["metrics"]["macro_f1"],
        "macro_f1_ci": model["macro_f1_ci"],
        "accuracy": model["metrics"]["accuracy"],
        "baseline_name": baseline["name"],
        "baseline_macro_f1": baseline["metrics"]["macro_f1"],
        "beats_baseline": metrics["comparison"]["beats_baseline"],
        "gain_ci": metrics["comparison"]["ci"],
        "test_rows": metrics["test_rows"],
        "train_seconds": model["train_seconds"],
        "verdict": metrics["verdict"],
    }


def _register(store, recipe, run_id, run_dir, dataset_version_id, metrics, report):
    def add(folder: str, base: str, method: str, figures: dict[str, Any]) -> int:
        return store.register_model_version(
            recipe.feature,
            run_id=run_id,
            dataset_version_id=dataset_version_id,
            model_path=str(run_dir / folder),
            base_model=base,
            method=method,
            metrics=figures,
            recipe=recipe.model_dump(mode="json"),
        ).version

    name = metrics["model"]["name"]
    model_version = add("model", name, "train", summarize(metrics))
    if metrics["comparison"]["ci"][1] >= 0:
        return model_version, None
    baseline = metrics["baseline"]
    lo, hi = metrics["comparison"]["ci"]
    version = add(
        "baseline",
        baseline["name"],
        "baseline",
        {
            "is_baseline": True,
            "macro_f1": baseline["metrics"]["macro_f1"],
            "macro_f1_ci": baseline["macro_f1_ci"],
            "accuracy": baseline["metrics"]["accuracy"],
            "compared_with": name,
            "compared_macro_f1": metrics["model"]["metrics"]["macro_f1"],
            "gain_ci": [-hi, -lo],
            "test_rows": metrics["test_rows"],
            "verdict": f"the {baseline['name']} baseline beats {name}; registered as servable",
        },
    )
    report(f"the pixel baseline beat {name}: registered as v{version}")
    return model_version, version
