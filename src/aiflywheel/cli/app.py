"""The ``flywheel`` Typer app, its command groups and the shared console."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console


def _show_flags_bare() -> None:
    """``--force``, not ``--force <bool>``, in ``--help``.

    typer's rich help (0.2x) prints a value type after every option, flags included (even
    ``--help``), which reads as if the flag took a value. Here flags show no type. Typer
    versions without ``TyperOption.display_type_rich`` already print flags bare.
    """
    from typer import core

    option = getattr(core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_bare", False):
        return

    def display_type_rich(self, ctx):
        if self.is_flag and not self.count:
            return None
        return shown(self, ctx)

    display_type_rich.flags_bare = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich  # type: ignore[union-attr]


_show_flags_bare()
app = typer.Typer(
    name="flywheel",
    help="Own an AI feature end to end: data -> train -> evaluate -> serve -> feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
recipe_app = typer.Typer(help="Recipe schema and validation.", no_args_is_help=True)
data_app = typer.Typer(help="Check and prepare data.", no_args_is_help=True)
runs_app = typer.Typer(help="Recorded runs.", no_args_is_help=True)
db_app = typer.Typer(help="The store's database schema.", no_args_is_help=True)
models_app = typer.Typer(help="Model catalog and registered model versions.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")


console = Console()
TEMPLATES_PACKAGE = "aiflywheel.recipes"


def _version_callback(value: bool) -> None:
    if value:
        from aiflywheel import __version__

        console.print(f"aiflywheel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """flywheel: turn product data into a trained, evaluated, served model, and back."""
