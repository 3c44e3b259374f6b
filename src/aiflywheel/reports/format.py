"""Formatting shared by the self-contained HTML reports.

The data-quality report (:mod:`aiflywheel.data.report_html`) and the evaluation report
(:mod:`aiflywheel.tasks.text_classification.report_html`) both reshape a loosely typed
dict (any key may be missing, ``None`` or of the wrong type) into what a jinja2 template in
``aiflywheel/templates`` shows. This module holds what they share: tolerant readers for
such dicts (:func:`finite_float`, :func:`as_dict`, :func:`as_list`), text for people
(:func:`shorten`, :func:`format_when`, :func:`short_hash`, :func:`tool_version`),
:func:`svg` to mark chart markup from :mod:`aiflywheel.reports.charts` as safe, and
:func:`template_environment`, the jinja2 environment (autoescaping on, undefined names an
error) that each report extends with its own filters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = [
    "as_dict",
    "as_list",
    "finite_float",
    "format_when",
    "short_hash",
    "shorten",
    "svg",
    "template_environment",
    "tool_version",
]


def template_environment(
    filters: Mapping[str, Callable[..., Any]] | None = None,
    functions: Mapping[str, Any] | None = None,
) -> jinja2.Environment:
    """A jinja2 environment for the package templates (autoescaping, strict names).

    ``filters`` are added to the environment's filters and ``functions`` to its globals
    (names a template can call); callers build it once and cache it.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aiflywheel", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(filters or {})
    env.globals.update(functions or {})
    return env


def finite_float(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a finite number."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def as_dict(value: object) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    """``value`` as a list if it is a sequence (not a string), else an empty list."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return []


def shorten(text: object, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with "…"."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def format_when(value: object) -> str:
    """An ISO timestamp as ``2026-11-25 01:02:03 UTC``; other text is shown as given."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return f"{moment:%Y-%m-%d %H:%M:%S}"
    offset = moment.utcoffset()
    if offset is not None and offset.total_seconds() == 0:
        return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    return f"{moment:%Y-%m-%d %H:%M:%S %z}"


def short_hash(value: object) -> dict[str, str]:
    """A hash as its first 12 characters plus the full value (for a tooltip)."""
    full = str(value) if value else ""
    return {"short": full[:12] if full else "—", "full": full}


def svg(markup: str) -> Markup:
    """A chart from :mod:`aiflywheel.reports.charts`; it escapes its own text."""
    return Markup(markup)  # safe: the chart functions escape every text they draw


def tool_version() -> str:
    """The installed aiflywheel version, or "" when it is not installed as a package."""
    try:
        return metadata.version("aiflywheel")
    except metadata.PackageNotFoundError:
        return ""
