"""How the command line prints a rich table.

In a terminal a table takes the terminal's width. In a pipe or a log file rich assumes 80
columns and wraps or cuts wide tables (twelve compress columns, feedback texts, model
lists), so there a table may use up to :data:`PIPE_WIDTH` columns. Every command prints
its tables through :func:`print_table`.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 140


def print_table(console: Console, table: Table) -> None:
    """``table`` at the terminal's width, or up to :data:`PIPE_WIDTH` columns in a pipe.

    ``console.print(table, width=...)`` cannot widen a table: rich caps it at the
    console's own width (80 in a pipe), so a pipe gets a console of its own, on the same
    file, for the table.
    """
    if console.is_terminal:
        console.print(table)
        return
    Console(file=console.file, width=PIPE_WIDTH, no_color=console.no_color).print(table)
