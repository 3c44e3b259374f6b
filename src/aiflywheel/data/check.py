"""The data stage end to end: ingest -> clean/PII -> split -> report, written to one directory.

``check_data(recipe, out_dir)`` writes, atomically per file::

    out_dir/
      recipe.yaml                     the recipe as validated
      dataset.jsonl                   cleaned, PII-free records (the dataset version)
      splits/train.jsonl val.jsonl test.jsonl
      splits/folds.json               k-fold ids over train+val (when split.k_folds)
      data_report.json                every figure of the report
      data_report.html                the same, self-contained, for people
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from aiflywheel.core.registry import get_task
from aiflywheel.data.clean import clean_dataset
from aiflywheel.data.ingest import ingest
from aiflywheel.data.report import build_data_report
from aiflywheel.data.report_html import render_data_report_html
from aiflywheel.data.split import SPLITS, split_dataset
from aiflywheel.errors import DataError, RecipeError
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.recipe import Recipe


@dataclass
class DataCheckResult:
    """Where the data stage wrote its files and the report it made."""

    out_dir: Path
    report: dict
    dataset_version: str
    split_version: str

    @property
    def report_json(self) -> Path:
        return self.out_dir / "data_report.json"

    @property
    def report_html(self) -> Path:
        return self.out_dir / "data_report.html"


def require_rows(recipe: Recipe) -> None:
    """RecipeError unless the recipe reads data rows (a ``data`` section)."""
    if recipe.data is None:
        raise RecipeError(
            f"data check reads rows from the data section, which task {recipe.task} does not "
            "use; its training run writes the data report (`flywheel train RECIPE`)"
        )


def check_data(recipe: Recipe, out_dir: Path) -> DataCheckResult:
    """Run the data stage for ``recipe`` and write its artifacts under ``out_dir``."""
    started = time.perf_counter()
    task = get_task(recipe.task)
    task.check_recipe(recipe)
    require_rows(recipe)
    ingested = ingest(recipe.data, base_dir=recipe.base_dir, seed=recipe.seed)
    cleaned = clean_dataset(ingested.dataset, recipe.clean, recipe.pii, seed=recipe.seed)
    dataset = cleaned.dataset
    if not len(dataset):
        raise DataError(
            f"no rows left after cleaning {recipe.data.source!r} "
            f"({ingested.rows_read} read; dropped: {_drop_summary(ingested, cleaned)})"
        )
    labels = sorted({r.label for r in dataset if r.label is not None})
    if len(labels) < task.min_labels:
        found = f"a single class {labels[0]!r}" if labels else "no labels"
        raise DataError(
            f"label column {recipe.data.columns.label!r} has {found} after cleaning "
            f"({len(dataset)} rows); task {recipe.task} needs at least {task.min_labels} classes"
        )
    split = split_dataset(dataset, recipe.split, seed=recipe.seed)
    dataset_version = dataset.content_hash()

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out_dir / "recipe.yaml",
        yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False),
    )
    dataset.to_jsonl(out_dir / "dataset.jsonl")
    for name in SPLITS:
        split.parts[name].to_jsonl(out_dir / "splits" / f"{name}.jsonl")
    if split.folds is not None:
        write_json_atomic(out_dir / "splits" / "folds.json", {"folds": split.folds})
    report = build_data_report(
        recipe,
        ingested,
        cleaned,
        split,
        dataset_version=dataset_version,
        seconds=time.perf_counter() - started,
    )
    write_json_atomic(out_dir / "data_report.json", report)
    write_text_atomic(out_dir / "data_report.html", render_data_report_html(report))
    return DataCheckResult(
        out_dir=out_dir, report=report, dataset_version=dataset_version, split_version=split.version
    )


def record_dataset_version(store, recipe: Recipe, result: DataCheckResult, run_dir: Path):
    """The store's version row for this data check (created on first sight of the data)."""
    return store.record_dataset_version(
        recipe.feature,
        content_hash=result.dataset_version,
        split_version=result.split_version,
        rows=result.report["rows"]["kept"],
        labels=result.report["labels"]["counts"],
        source=recipe.data.source,
        path=str(run_dir / "dataset.jsonl"),
    )


def _drop_summary(ingested, cleaned) -> str:
    drops = ingested.drops + cleaned.drops
    if ingested.malformed:
        drops["malformed"] = len(ingested.malformed)
    return ", ".join(f"{n} {reason}" for reason, n in drops.most_common()) or "nothing"


def run_data_check(recipe: Recipe, *, store, runs_dir: Path, out_dir: Path | None = None):
    """Run the data stage as a recorded run: a run dir that is complete or absent.

    Returns ``(result, run_id)``. The feature, the dataset version and the run are
    recorded in ``store``; a failed run is recorded with its error and leaves no files.
    """
    from aiflywheel.core.runs import feature_run

    store.upsert_feature(
        recipe.feature, recipe.task, recipe.description, recipe.model_dump(mode="json")
    )
    final_dir = out_dir
    replaceable = (
        final_dir is None or not final_dir.exists() or (final_dir / "data_report.json").is_file()
    )
    if not replaceable and any(final_dir.iterdir()):
        raise DataError(
            f"output folder {final_dir} exists and holds other files; "
            "choose a new or empty folder (or an earlier data-check folder to replace)"
        )
    with feature_run(store, runs_dir, recipe.feature, "data_check", final_dir=final_dir) as run:
        result = check_data(recipe, run.work_dir)
        result.out_dir = run.commit()
        version = record_dataset_version(store, recipe, result, run.final_dir)
        run.succeed(
            summary={
                "rows": result.report["rows"],
                "warnings": len(result.report["warnings"]),
                "dataset_version": result.dataset_version,
                "split_version": result.split_version,
            },
            dataset_version_id=version.id,
        )
    return result, run.run_id
