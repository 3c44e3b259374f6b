"""`flywheel runs list`, `db status|upgrade`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from aiflywheel.cli.app import console, db_app, runs_app
from aiflywheel.tables import print_table


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
