"""aiflywheel: own an AI feature end to end.

Data in -> train -> evaluate -> compress -> serve -> feedback -> retrain, declared by
one recipe. The public Python API is listed in ``__all__``; names are imported on first
use so that ``import aiflywheel`` (and the CLI) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DataCheckResult": "aiflywheel.data.check",
    "check_data": "aiflywheel.data.check",
    "Dataset": "aiflywheel.data.dataset",
    "Record": "aiflywheel.data.dataset",
    "FlywheelError": "aiflywheel.errors",
    "Recipe": "aiflywheel.recipe",
    "load_recipe": "aiflywheel.recipe",
    "Store": "aiflywheel.store",
    "load": "aiflywheel.core.versions",
    "LoadedModel": "aiflywheel.core.versions",
    "Prediction": "aiflywheel.tasks.text_classification.models.base",
    "explain_prediction": "aiflywheel.tasks.text_classification.explain",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiflywheel' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
