"""The task seam: every registered task satisfies the contract; nothing else names a task."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiflywheel.core.registry import TASKS, get_task
from aiflywheel.core.task import Quality, Task
from aiflywheel.errors import RecipeError
from aiflywheel.recipe import parse_recipe

SRC = Path(__file__).parents[2] / "src" / "aiflywheel"
TASK_NAME = re.compile('task ?== ?"|"(' + "|".join(TASKS) + ')"')


@pytest.mark.parametrize("name", list(TASKS))
def test_every_registered_task_satisfies_the_contract(name: str) -> None:
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert isinstance(task.quality({}), Quality)
    assert task.quality({}).cells()[0] == "not evaluated"


def test_no_code_outside_tasks_and_the_registry_branches_on_a_task_name() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith("tasks/") or relative == "core/registry.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TASK_NAME.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_an_unknown_task_is_one_line_listing_the_registered_ones() -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe({"feature": "f", "task": "sentiment", "data": {"source": "x.csv"}})
    message = str(caught.value)
    assert "\n" not in message
    assert f"task must be one of {', '.join(TASKS)}; got 'sentiment'" in message


def test_a_section_of_another_task_is_refused() -> None:
    with pytest.raises(RecipeError, match="the assistant section only applies to task assistant"):
        parse_recipe(
            {
                "feature": "f",
                "data": {"source": "x.csv"},
                "assistant": {"knowledge_base": "kb", "handoff_below": 0.5, "faq_at_least": 0.9},
            }
        )
