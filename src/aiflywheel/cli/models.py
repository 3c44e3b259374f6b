"""`flywheel train`, `models catalog|list|show`, `predict`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aiflywheel.cli.app import app, console, models_app
from aiflywheel.tables import print_table


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    method: Annotated[
        str | None,
        typer.Option("--method", help="Override model.method: auto, head, finetune, lora."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Override model.name.")] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            help="Fine-tune on N processes of this machine (DDP: gloo on CPU, NCCL with one "
            "process per GPU). For several machines launch with torchrun instead.",
        ),
    ] = None,
) -> None:
    """Data check -> baseline -> train -> evaluate -> register a candidate version.

    Ctrl-C saves a checkpoint; the same command resumes from it (with any --nproc).
    """
    from aiflywheel.core.registry import get_task
    from aiflywheel.recipe import load_recipe, with_model_overrides
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store
    from aiflywheel.training.distributed import check_nproc, training_group

    loaded = with_model_overrides(load_recipe(recipe), name=model, method=method)
    task = get_task(loaded.task)
    argv = ["train", str(recipe)]
    argv += ["--method", method] if method else []
    argv += ["--model", model] if model else []
    with training_group(check_nproc(nproc), argv) as leader:
        if not leader:
            return  # a follower: it took its share of every fit the leader ran
        built = task.train(
            loaded,
            store=open_store(),
            settings=get_settings(),
            report=lambda line: console.print(f"[dim]·[/dim] {escape(line)}", highlight=False),
        )
    task.show_built(built)


@models_app.command("catalog")
def models_catalog() -> None:
    """Packaged encoders usable offline, by alias."""
    from aiflywheel.models.catalog import CATALOG

    table = Table("alias", "languages", "size", "layers", "license", "package", "what")
    for entry in CATALOG.values():
        table.add_row(
            entry.alias,
            ", ".join(entry.languages),
            f"{entry.size_mb} MB",
            str(entry.layers),
            entry.license,
            entry.package,
            entry.description,
        )
    print_table(console, table)
    console.print(
        "A local transformers folder works too; a Hugging Face id needs FLYWHEEL_ALLOW_DOWNLOAD=1."
    )


@models_app.command("list")
def models_list(
    feature: Annotated[str | None, typer.Argument(help="Only this feature.")] = None,
) -> None:
    """Registered model versions."""
    from aiflywheel.store import open_store

    table = Table("feature", "version", "status", "model", "quality", "baseline", "created")
    for version, name in open_store().list_model_versions(feature):
        quality, baseline = _version_quality(version)
        table.add_row(
            name,
            f"v{version.version}",
            version.status,
            f"{version.base_model}/{version.method}",
            quality,
            baseline,
            f"{version.created_at:%Y-%m-%d %H:%M}",
        )
    print_table(console, table)


def _version_quality(row) -> tuple[str, str]:
    """(quality, baseline) cells of a version, as its task reports them."""
    from aiflywheel.core.registry import get_task
    from aiflywheel.core.version_metrics import VersionMetrics
    from aiflywheel.core.versions import task_of

    return get_task(task_of(row)).quality(VersionMetrics.of(row)).cells()


@models_app.command("show")
def models_show(ref: Annotated[str, typer.Argument(help="FEATURE or FEATURE:VERSION.")]) -> None:
    """One model version: verdict, figures, where its files are."""
    from aiflywheel.core.version_metrics import VersionMetrics
    from aiflywheel.core.versions import parse_version_ref
    from aiflywheel.store import open_store

    feature, number = parse_version_ref(ref)
    version = open_store().get_model_version(feature, number)
    m = VersionMetrics.of(version)
    console.print(
        f"[bold]{feature} v{version.version}[/bold] ({version.status}) "
        f"{version.base_model}/{version.method}"
    )
    console.print(escape(m.verdict), highlight=False)
    quality, baseline = _version_quality(version)
    console.print(f"{quality}; baseline {baseline}", highlight=False)
    if m.accuracy is not None:
        console.print(
            f"accuracy {m.accuracy:.4f}, {m.test_rows or 0} test rows, trained in "
            f"{m.train_seconds or 0:.0f} s"
        )
    run_dir = Path(version.model_path).parent
    console.print(
        f"model: {version.model_path}\nreport: {run_dir / 'report.html'}\nrun: {version.run_id}"
    )


@app.command()
def predict(
    ref: Annotated[str, typer.Argument(help="FEATURE or FEATURE:VERSION.")],
    texts: Annotated[
        list[str] | None,
        typer.Argument(help="Texts to classify; - reads them from standard input, one a line."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the tokens behind each label.")
    ] = False,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Predict every row of this CSV / TSV / JSONL / Parquet file (streamed).",
        ),
    ] = None,
    output_file: Annotated[
        Path | None,
        typer.Option("--output", help="Where to write the predictions (.csv/.jsonl/.parquet)."),
    ] = None,
    column: Annotated[
        str | None,
        typer.Option("--column", help="The input column (default: the task's, e.g. text)."),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", help="Rows read, predicted and saved at a time.")
    ] = 1000,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an unfinished run instead of resuming.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
) -> None:
    """Predict with a registered model: texts given here (prints JSON lines), or a whole
    file with --input/--output (resumable: rerun the same command after an interruption).
    """
    from aiflywheel.errors import DataError

    if input_file is not None or output_file is not None:
        if input_file is None or output_file is None:
            raise DataError("batch prediction needs both --input FILE and --output FILE")
        if texts:
            raise DataError("give texts or --input FILE, not both")
        _predict_file(ref, input_file, output_file, column, chunk_rows, restart, force)
        return
    if not texts:
        raise DataError("give texts to predict, - to read them from standard input, or --input")
    from aiflywheel.core.versions import load

    if "-" in texts:
        texts = _stdin_texts(len(texts))
    model = load(ref)
    for text, prediction in zip(texts, model.predict(texts), strict=True):
        line = {"text": text, **prediction.to_json(), "version": model.version}
        if explain:
            from aiflywheel.tasks.text_classification.explain import top_tokens

            line["top_tokens"] = top_tokens(model.explain(text, prediction.label))
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")


def _predict_file(ref, source, output, column, chunk_rows, restart, force) -> None:
    from aiflywheel.batch.predict import predict_file

    result = predict_file(
        ref,
        source,
        output,
        column=column,
        chunk_rows=chunk_rows,
        restart=restart,
        force=force,
        report=lambda line: console.print(f"[dim]·[/dim] {escape(line)}", highlight=False),
    )
    errors = f", {result.errors:,} rows with an error" if result.errors else ""
    console.print(
        f"{result.rows:,} rows predicted by {result.feature} v{result.version}{errors} "
        f"in {result.seconds:.1f} s -> {escape(str(result.output))} "
        f"(manifest {escape(str(result.manifest))})",
        highlight=False,
    )


def _stdin_texts(given: int) -> list[str]:
    """``predict FEATURE -``: one text a line from standard input, blank lines skipped."""
    from aiflywheel.errors import DataError

    if given != 1:
        raise DataError(f"- reads the texts from standard input; give it alone, got {given} texts")
    texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise DataError(
            "no texts on standard input; give one text a line (blank lines are skipped)"
        )
    return texts
