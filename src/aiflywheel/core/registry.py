"""Task name -> the module that implements it, imported on first use.

This table is the only place that knows which tasks exist; adding a task is one line.
"""

from __future__ import annotations

import importlib
from functools import cache

from aiflywheel.core.task import Task
from aiflywheel.errors import RecipeError

TASKS: dict[str, str] = {
    "text_classification": "aiflywheel.tasks.text_classification",
    "assistant": "aiflywheel.tasks.assistant",
    "image_classification": "aiflywheel.tasks.image_classification",
    "text_generation": "aiflywheel.tasks.text_generation",
    "text_to_text": "aiflywheel.tasks.text_to_text",
}
DEFAULT_TASK = "text_classification"


def task_names() -> list[str]:
    return list(TASKS)


def check_task_name(name: str) -> str:
    """``name`` if a task of that name is registered; else a RecipeError listing them."""
    if name not in TASKS:
        raise RecipeError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return name


@cache
def get_task(name: str) -> Task:
    """The task object of ``name`` (its package's ``TASK``)."""
    module = importlib.import_module(TASKS[check_task_name(name)])
    return module.TASK
