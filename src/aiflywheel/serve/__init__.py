"""The REST API behind ``flywheel serve`` (needs ``pip install 'aiflywheel[serve]'``).

``create_app(config, store)`` builds the FastAPI app; ``ServeConfig`` holds its options.
Names are imported on first use, so the CLI can register its commands without FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "aiflywheel.serve.app",
    "ServeConfig": "aiflywheel.serve.config",
    "serve_command": "aiflywheel.cli.serve",
    "keys_app": "aiflywheel.cli.serve",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiflywheel.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
