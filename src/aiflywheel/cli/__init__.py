"""The ``flywheel`` command line: each command a few lines over a stage.

One module per command group (``data``, ``models``, ``runs``, ``loop``, ``serve``,
``compress``, ``analytics``; the assistant's commands live in its task folder). Errors a
user can fix are printed in one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from aiflywheel.cli import data, models, runs  # noqa: F401  (registers their commands)
from aiflywheel.cli.app import app, console
from aiflywheel.errors import FlywheelError, Interrupted

__all__ = ["app", "console", "main"]


def _register_more_commands() -> None:
    from aiflywheel.cli import loop as loop_commands
    from aiflywheel.cli.serve import console_command, keys_app, serve_command

    app.command("serve")(serve_command)
    app.command("console")(console_command)
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
    from aiflywheel.cli import analytics

    app.command("drift")(analytics.drift_command)
    app.command("insights")(analytics.insights_command)
    app.command("plan")(analytics.plan_command)


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
        # click returns typer.Exit's code instead of raising it in non-standalone mode
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    except Interrupted as exc:
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
