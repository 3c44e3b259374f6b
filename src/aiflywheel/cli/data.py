"""`flywheel init`, `recipe schema|validate`, `data check|sources|versions`."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aiflywheel.cli.app import TEMPLATES_PACKAGE, app, console, data_app, recipe_app
from aiflywheel.errors import RecipeError
from aiflywheel.tables import print_table


def _templates() -> dict[str, str]:
    folder = resources.files(TEMPLATES_PACKAGE)
    return {
        entry.name.removesuffix(".yaml"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


@app.command()
def init(
    template: Annotated[
        str, typer.Option("--template", "-t", help="Template name (see --list).")
    ] = "zh-reviews",
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the recipe.")
    ] = Path("recipe.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    list_templates: Annotated[
        bool, typer.Option("--list", help="List the templates and exit.")
    ] = False,
) -> None:
    """Write a starter recipe."""
    templates = _templates()
    if list_templates:
        for name, text in sorted(templates.items()):
            console.print(f"[bold]{name}[/bold]  {text.splitlines()[0].lstrip('# ')}")
        return
    if template not in templates:
        raise RecipeError(f"unknown template {template!r}; known: {', '.join(sorted(templates))}")
    if output.exists() and not force:
        raise RecipeError(f"{output} already exists; pass --force to overwrite it")
    from aiflywheel.files import write_text_atomic

    write_text_atomic(output, templates[template])
    step = "data check" if "\ndata:" in templates[template] else "train"  # rows to check
    console.print(f"wrote {output} (template {template}); next: flywheel {step} {output}")


@recipe_app.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON Schema."""
    from aiflywheel.recipe import recipe_json_schema

    sys.stdout.write(json.dumps(recipe_json_schema(), indent=2, ensure_ascii=False) + "\n")


@recipe_app.command("validate")
def recipe_validate(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")]) -> None:
    """Validate a recipe and print it with every default filled in."""
    import yaml

    from aiflywheel.recipe import load_recipe

    loaded = load_recipe(recipe)
    sys.stdout.write(
        yaml.safe_dump(loaded.model_dump(mode="json"), allow_unicode=True, sort_keys=False)
    )


@data_app.command("check")
def data_check(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of a new run folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Ingest, clean, redact PII, split; print the data-quality summary; write the report."""
    from aiflywheel.data.check import require_rows, run_data_check
    from aiflywheel.recipe import load_recipe
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    loaded = load_recipe(recipe)
    require_rows(loaded)
    settings = get_settings()
    store = open_store()
    with console.status(f"checking {loaded.data.source} ..."):
        result, run_id = run_data_check(
            loaded, store=store, runs_dir=settings.runs_dir, out_dir=out
        )
    if as_json:
        sys.stdout.write(json.dumps(result.report, ensure_ascii=False, indent=2) + "\n")
        return
    from aiflywheel.data.summary import print_data_summary

    print_data_summary(result.report, console)
    console.print(f"\nrun {run_id}: [bold]{result.report_html}[/bold] and data_report.json")


@data_app.command("sources")
def data_sources() -> None:
    """List the built-in demo data sources."""
    from aiflywheel.data.demo_sources import DEMO_PREFIX, DEMO_SOURCES

    for name, (_, description) in DEMO_SOURCES.items():
        console.print(f"[bold]{DEMO_PREFIX}{name}[/bold]  {description}")


@data_app.command("versions")
def data_versions(feature: Annotated[str, typer.Argument(help="Feature name.")]) -> None:
    """List the dataset versions recorded for a feature."""
    from aiflywheel.store import open_store

    table = Table("id", "dataset (content hash)", "split", "rows", "labels", "created")
    for version in open_store().list_dataset_versions(feature):
        labels = ", ".join(f"{k} {v}" for k, v in list(version.labels.items())[:4])
        table.add_row(
            str(version.id),
            version.content_hash[:12],
            version.split_version[:12],
            str(version.rows),
            labels,
            f"{version.created_at:%Y-%m-%d %H:%M}",
        )
    print_table(console, table)
