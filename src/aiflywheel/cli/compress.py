"""CLI command ``flywheel compress``: a few lines over ``aiflywheel.compress``.

Registered on the ``flywheel`` app by ``aiflywheel.cli``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiflywheel.tables import print_table

console = Console()


def compress_command(
    ref: Annotated[
        str,
        typer.Argument(
            help="FEATURE or FEATURE:VERSION of a fine-tuned version (default: the champion, "
            "else the newest candidate)."
        ),
    ],
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            help="Take the compress section (variants, gate) from this recipe instead of the "
            "version's own.",
        ),
    ] = None,
) -> None:
    """ONNX, int8, fp16 and pruned variants: each evaluated, timed, gated and registered."""
    from aiflywheel.core.registry import get_task
    from aiflywheel.core.versions import parse_version_ref, task_of
    from aiflywheel.recipe import load_recipe
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    feature, version = parse_version_ref(ref)
    store = open_store()
    task = get_task(task_of(store.get_model_version(feature, version)))
    result = task.compress(
        feature,
        version,
        store=store,
        settings=get_settings(),
        recipe=load_recipe(recipe) if recipe else None,
        report=lambda line: console.print(f"[dim]·[/dim] {escape(line)}", highlight=False),
    )
    columns, lines = result.table()
    table = Table(*columns, title=f"{feature} v{result.parent_version} and its variants")
    for line in lines:
        table.add_row(*line)
    print_table(console, table)  # twelve columns: more than the 80 rich assumes for a pipe
    for row in result.variants.values():
        gate = row["gate"]
        mark = "[green]pass[/green]" if gate["passed"] else "[red]rejected[/red]"
        console.print(
            f"  {mark} {row['variant']} (v{row['version']}, {row['method']}): "
            f"{escape(gate['reason'])}",
            highlight=False,
        )
    for item in result.skipped:
        console.print(f"  [yellow]skipped[/yellow] {item['variant']}: {escape(item['reason'])}")
    console.print(f"figures: [bold]{result.compression_json}[/bold]", highlight=False)
