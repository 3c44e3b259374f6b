"""The ``flywheel`` command line: each command a few lines over a stage.

Errors a user can fix are printed in one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiflywheel.errors import FlywheelError, RecipeError, TrainingInterrupted
from aiflywheel.tables import print_table


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
    step = "train" if "\ntask: assistant" in templates[template] else "data check"
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
    from aiflywheel.data.check import run_data_check
    from aiflywheel.recipe import load_recipe
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    loaded = load_recipe(recipe)
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


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    method: Annotated[
        str | None,
        typer.Option("--method", help="Override model.method: auto, head, finetune, lora."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Override model.name.")] = None,
) -> None:
    """Data check -> baseline -> train -> evaluate -> register a candidate version.

    Ctrl-C saves a checkpoint; the same command resumes from it.
    """
    from aiflywheel.core.registry import get_task
    from aiflywheel.recipe import load_recipe, with_model_overrides
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    loaded = with_model_overrides(load_recipe(recipe), name=model, method=method)
    task = get_task(loaded.task)
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
        list[str],
        typer.Argument(help="Texts to classify; - reads them from standard input, one a line."),
    ],
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the tokens behind each label.")
    ] = False,
) -> None:
    """Classify texts with a registered model (prints JSON lines)."""
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


@runs_app.command("list")
def runs_list(
    feature: Annotated[str | None, typer.Option("--feature", help="Only this feature.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many, newest first.")] = 20,
) -> None:
    """List recorded runs, newest first."""
    from aiflywheel.store import open_store

    table = Table("run", "feature", "kind", "status", "started", "folder / error")
    for run, name in open_store().list_runs(feature, limit=limit):
        detail = run.error if run.status == "failed" else run.run_dir
        table.add_row(
            run.id, name, run.kind, run.status, f"{run.started_at:%Y-%m-%d %H:%M:%S}", detail
        )
    print_table(console, table)


@db_app.command("status")
def db_status() -> None:
    """Show the store URL and its schema revision."""
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    store = open_store()
    console.print(f"store {get_settings().store_url} at revision {store.revision()}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (opening the store does this too)."""
    from aiflywheel.store import open_store

    store = open_store()
    store.upgrade()
    console.print(f"store at revision {store.revision()}")


def _register_more_commands() -> None:
    from aiflywheel.cli import loop as loop_commands
    from aiflywheel.cli.serve import keys_app, serve_command

    app.command("serve")(serve_command)
    app.add_typer(keys_app, name="keys")

    app.add_typer(loop_commands.feedback_app, name="feedback")
    app.command("retrain")(loop_commands.retrain_command)
    app.command("promote")(loop_commands.promote_command)
    app.command("rollback")(loop_commands.rollback_command)
    app.command("audit")(loop_commands.audit_command)
    from aiflywheel.cli.compress import compress_command

    app.command("compress")(compress_command)
    from aiflywheel.tasks.assistant import cli as assistant_commands

    app.command("eval")(assistant_commands.eval_command)
    app.command("ask")(assistant_commands.ask_command)
    app.add_typer(assistant_commands.tickets_app, name="tickets")
    app.add_typer(assistant_commands.kb_app, name="kb")
    demo_app = typer.Typer(help="Guided demos on shipped data.", no_args_is_help=True)
    demo_app.command("turn")(loop_commands.demo_turn_command)
    demo_app.command("assistant-turn")(assistant_commands.demo_turn_command)
    app.add_typer(demo_app, name="demo")


_register_more_commands()


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage-error and abort classes of click and of the copy of click typer may bundle."""
    import click

    usage: list[type] = [click.exceptions.ClickException]
    aborted: list[type] = [click.exceptions.Abort]
    try:
        from typer._click import exceptions as bundled
    except ImportError:
        bundled = None
    if bundled is not None:
        usage.append(bundled.ClickException)
        if hasattr(bundled, "Abort"):
            aborted.append(bundled.Abort)
    return tuple(usage), tuple(aborted)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; user errors print one line and exit 2."""
    try:
        app(args=argv, standalone_mode=False)
    except TrainingInterrupted as exc:
        Console(stderr=True).print(
            f"interrupted: {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return 130
    except FlywheelError as exc:
        Console(stderr=True).print(
            f"[red]error:[/red] {type(exc).__name__}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        usage, aborted = _click_exception_types()
        if isinstance(exc, usage):
            exc.show()
            return exc.exit_code
        if isinstance(exc, aborted):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
