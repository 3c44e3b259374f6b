"""``flywheel serve`` and ``flywheel keys create|list|revoke``.

Registered in ``aiflywheel.cli`` with ``app.command("serve")(serve_command)`` and
``app.add_typer(keys_app, name="keys")``. Importing this module needs neither FastAPI
nor uvicorn; ``serve`` asks for the ``serve`` extra when they are missing.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aiflywheel.errors import ModelError, require_module
from aiflywheel.tables import print_table

SERVE_EXTRA = "pip install 'aiflywheel[serve]'"

keys_app = typer.Typer(help="API keys for `flywheel serve`.", no_args_is_help=True)


class Role(str, Enum):
    client = "client"
    admin = "admin"
    reviewer = "reviewer"
    viewer = "viewer"


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    feature: Annotated[
        list[str] | None,
        typer.Option(
            "--feature", help="Serve this feature (repeatable); default: every trained feature."
        ),
    ] = None,
    shadow: Annotated[
        list[str] | None,
        typer.Option(
            "--shadow",
            help="FEATURE:VERSION scored in the background next to the champion (repeatable).",
        ),
    ] = None,
    serve_candidates: Annotated[
        bool,
        typer.Option(
            "--serve-candidates",
            help="Serve a feature's newest candidate while it has no champion "
            "(default: classify answers 409 until one is promoted).",
        ),
    ] = False,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without an API key (demos only).")
    ] = False,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Most texts in one model call.")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="How long a batch waits for company.")
    ] = 5.0,
    reload_interval: Annotated[
        float,
        typer.Option("--reload-interval", min=0.1, help="Seconds between champion checks."),
    ] = 2.0,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1024, help="Largest request body (413 above).")
    ] = 1 << 20,
    max_texts: Annotated[
        int, typer.Option("--max-texts", min=1, help="Most texts per classify request.")
    ] = 64,
    max_text_chars: Annotated[
        int, typer.Option("--max-text-chars", min=1, help="Longest text accepted.")
    ] = 20_000,
    log_wait_seconds: Annotated[
        float,
        typer.Option(
            "--log-wait-seconds",
            min=0.01,
            help="How long classify waits for its predictions to be stored (503 after).",
        ),
    ] = 5.0,
    log_max_backlog: Annotated[
        int,
        typer.Option(
            "--log-max-backlog",
            min=1,
            help="Predictions waiting for the store beyond which classify answers 503 at once.",
        ),
    ] = 10_000,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the champion models over a REST API (docs at /docs)."""
    require_module("fastapi", what="flywheel serve", install=SERVE_EXTRA)
    uvicorn = require_module("uvicorn", what="flywheel serve", install=SERVE_EXTRA)
    require_module("prometheus_client", what="flywheel serve", install=SERVE_EXTRA)
    from aiflywheel.serve.app import create_app
    from aiflywheel.serve.config import make_config
    from aiflywheel.serve.serving_models import serving_plan
    from aiflywheel.store import open_store

    config = make_config(
        host=host,
        port=port,
        features=tuple(feature or ()),
        shadows=tuple(shadow or ()),
        serve_candidates=serve_candidates,
        auth=not no_auth,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        reload_interval=reload_interval,
        max_body_bytes=max_body_bytes,
        max_texts=max_texts,
        max_text_chars=max_text_chars,
        log_wait_seconds=log_wait_seconds,
        log_max_backlog=log_max_backlog,
        log_level=log_level,
    )
    store = open_store()
    plan = serving_plan(store, config)
    versions = plan.versions
    for name, version in [*versions.items(), *config.shadows]:
        row = store.get_model_version(name, version)
        if not Path(row.model_path).is_dir():
            raise ModelError(f"{name} v{version}: model folder {row.model_path} is missing")
    _log_to_stderr(log_level)
    err = Console(stderr=True)
    if no_auth:
        err.print(
            "[bold red]WARNING: --no-auth: authentication is OFF. Anyone who can reach "
            f"{host}:{port} can classify, read feedback counts, promote and roll back. "
            "Use it for local demos only.[/bold red]",
            soft_wrap=True,
        )
    shown = ", ".join(f"{name} v{version}" for name, version in versions.items()) or "nothing yet"
    err.print(f"serving {shown} on http://{host}:{port} (API docs at /docs)", soft_wrap=True)
    for name in plan.waiting:
        err.print(
            f"[yellow]{name}: no champion yet; classify answers 409 until one is promoted "
            f"(`flywheel promote {name}:VERSION`) or the server runs with --serve-candidates"
            "[/yellow]",
            soft_wrap=True,
        )
    uvicorn.run(
        create_app(config, store),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(config.graceful_shutdown_seconds),
    )


def _log_to_stderr(level: str) -> None:
    """Show the server's own messages (hot swaps, store retries) next to uvicorn's."""
    logger = logging.getLogger("aiflywheel")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    value = logging.getLevelName(level.upper())
    logger.setLevel(value if isinstance(value, int) else logging.INFO)


@keys_app.command("create")
def keys_create(
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            help="client: classify and give feedback (API); admin: all; reviewer: review "
            "feedback in the console; viewer: read the console.",
        )
    ],
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")] = "",
) -> None:
    """Create an API key; it is printed once (stdout) and stored only as a hash."""
    from aiflywheel.store import open_store

    key, row = open_store().create_api_key(role.value, name)
    Console(stderr=True).print(
        f"created {row.role} key {row.key_id}{f' ({name})' if name else ''}; it is shown only "
        "now, store it safely:",
        soft_wrap=True,
    )
    sys.stdout.write(key + "\n")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (ids, roles, names; never the secrets)."""
    from aiflywheel.store import open_store

    table = Table("id", "role", "name", "created", "revoked")
    for row in open_store().list_api_keys():
        revoked = f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
        table.add_row(row.key_id, row.role, row.name, f"{row.created_at:%Y-%m-%d %H:%M}", revoked)
    print_table(Console(), table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id (see `keys list`).")]) -> None:
    """Revoke a key (running servers stop accepting it within a few seconds)."""
    from aiflywheel.store import open_store

    row = open_store().revoke_api_key(key_id)
    Console().print(f"revoked key {row.key_id}")


def console_command(
    host: Annotated[str, typer.Option("--host", help="Interface of the server.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the console's URL; open no browser.")
    ] = False,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="When it starts the server: no sign-in (demos only)."),
    ] = False,
) -> None:
    """Open the web console (/console): of the server already running at --host/--port,
    else of one it starts there (the same server as `flywheel serve`)."""
    import threading
    import time
    import webbrowser

    import httpx

    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown_host}:{port}"
    url = f"{base}/console"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    err = Console(stderr=True)
    if ready():
        sys.stdout.write(url + "\n")
        if not no_browser:
            webbrowser.open(url)
        return
    if not no_auth:
        from aiflywheel.console.session import CONSOLE_ROLES
        from aiflywheel.store import open_store

        live = [k for k in open_store().list_api_keys() if k.revoked_at is None]
        if not any(k.role in CONSOLE_ROLES for k in live):
            err.print(
                "no key can sign in yet: create one with "
                "`flywheel keys create --role admin --name YOUR-NAME`",
                soft_wrap=True,
            )
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    if not no_browser:

        def open_when_ready() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if ready():
                    webbrowser.open(url)
                    return
                time.sleep(0.5)

        threading.Thread(target=open_when_ready, daemon=True).start()
    serve_command(host=host, port=port, no_auth=no_auth)
