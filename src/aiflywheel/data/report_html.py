"""The data-quality report as one self-contained HTML page.

:func:`render_data_report_html` turns the report dict built by the data stages (ingest,
clean, PII, split) into a page that works offline: inline CSS, charts as inline SVG
(:mod:`aiflywheel.reports.charts`), no scripts, no links to anything outside the file. The
verdict (warnings a product manager can act on, or "No problems found") comes first,
then the numbers behind it, section by section. The page prints cleanly and is
well-formed XML as well as HTML.

The template is ``templates/data_report.html.j2`` inside the package, rendered with
autoescaping on, so text from the data (labels, examples, file notes) is always
escaped. This module only reshapes the dict into what the template shows; every key
may be missing, ``None``, zero or empty and the page still renders.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jinja2

from aiflywheel.reports.charts import bar_chart_svg, histogram_svg, stacked_bar_svg
from aiflywheel.reports.format import (
    as_dict,
    as_list,
    finite_float,
    format_when,
    short_hash,
    shorten,
    svg,
    template_environment,
    tool_version,
)

__all__ = ["render_data_report_html"]

#: How many labels the label chart shows; the rest are summed up in a sentence.
TOP_LABELS = 30
#: How many labels get their own column in the splits table.
SPLIT_LABEL_COLUMNS = 6
#: How many duplicate examples and malformed lines are listed.
MAX_EXAMPLES = 10
MAX_MALFORMED = 20
#: Longest example text shown before it is cut with "…".
EXAMPLE_CHARS = 160

_CHART_WIDTH = 860
_LEVELS = ("error", "warning", "info")

_DROP_REASONS = {
    "empty": "empty text",
    "too_short": "too short",
    "too_long": "too long",
    "missing_label": "missing label",
    "duplicate": "exact duplicate",
    "near_duplicate": "near duplicate",
    "conflicting_label": "conflicting labels",
    "pii": "contains PII",
    "malformed": "malformed line",
}
_CLEANING = {
    "unicode_normalized": "Unicode normalized",
    "html_stripped": "HTML tags removed",
    "control_chars_removed": "control characters removed",
    "whitespace_collapsed": "whitespace collapsed",
    "truncated": "cut to clean.max_chars",
}
_PII_TYPES = {
    "email": "email address",
    "phone": "phone number",
    "cn_id": "Chinese ID card number",
    "bank_card": "bank card number",
    "ip": "IP address",
    "url_secret": "secret in a URL",
}
_PII_MODES = {
    "redact": "each match is replaced by a typed placeholder such as <PHONE>; the row is kept.",
    "mask": "each match is partly hidden (138****5678); the row is kept.",
    "drop_row": "rows with any match are dropped.",
    "off": "detection is off, so personal data may reach the model.",
}
_CONFLICT_POLICIES = {
    "drop": "all copies of a text with conflicting labels are dropped",
    "majority": "the majority label is kept (all copies are dropped on a tie)",
    "keep": "every copy is kept and only flagged",
}
_LANGUAGES = {
    "zh": "Chinese (zh)",
    "en": "English (en)",
    "mixed": "mixed Chinese and English",
    "other": "other",
}
_LEAKAGE = {
    "test_in_train": "test texts also in train",
    "val_in_train": "validation texts also in train",
    "test_in_val": "test texts also in validation",
    "groups_shared": "groups found in more than one split",
}
_LENGTH_STATS = ("min", "p5", "p25", "p50", "p75", "p95", "p99", "max", "mean")


def render_data_report_html(report: Mapping[str, Any]) -> str:
    """Render the data-quality ``report`` dict as one self-contained HTML page.

    The dict has the keys written by the data stages (``feature``, ``rows``, ``drops``,
    ``duplicates``, ``pii``, ``labels``, ``lengths``, ``languages``, ``splits``,
    ``warnings``, ...); any of them may be missing, ``None`` or empty, e.g. for
    unlabeled data, data that was not split, or zero rows.
    """
    template = _environment().get_template("data_report.html.j2")
    return template.render(**_view(report))


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The package templates' environment with this report's ``num`` and ``pct``."""
    return template_environment(filters={"num": _num}, functions={"pct": _pct})


# ----------------------------------------------------------------------------- formatting


def _num(value: object) -> str:
    """A number for people: ``35,124``, ``95.3``, ``1.11``; ``None`` reads "—"."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value.is_integer() and abs(value) >= 1:
            return f"{value:,.0f}"
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value)


def _pct(part: object, whole: object) -> str:
    """``part`` as a percentage of ``whole`` (``"48.1%"``), or "—" when ``whole`` is 0."""
    p, w = _float(part), _float(whole)
    if w <= 0:
        return "—"
    return f"{100 * p / w:.1f}%"


def _float(value: object) -> float:
    """``value`` as a finite float; anything else is 0."""
    number = finite_float(value)
    return 0.0 if number is None else number


def _int(value: object) -> int:
    """``value`` as an int; ``None`` or non-numbers are 0."""
    return int(round(_float(value)))


def _humanize(key: str, names: Mapping[str, str]) -> str:
    """The display name of ``key``: from ``names``, else the key with spaces."""
    return names.get(key, str(key).replace("_", " "))


# ----------------------------------------------------------------------------- sections


def _view(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, one entry per page section."""
    rows = as_dict(report.get("rows"))
    read, kept = _int(rows.get("read")), _int(rows.get("kept"))
    labels = _labels(as_dict(report.get("labels")))
    lengths = _lengths(as_dict(report.get("lengths")))
    pii = _pii(as_dict(report.get("pii")))
    splits = _splits(as_dict(report.get("splits")), labels["order"])
    header = {
        "feature": str(report.get("feature") or "unnamed feature"),
        "task": str(report.get("task") or ""),
        "source": str(report.get("source") or "—"),
        "generated": format_when(report.get("generated_at")),
        "generated_iso": str(report.get("generated_at") or ""),
        "version": short_hash(report.get("dataset_version")),
        "seconds": _float(report.get("seconds")),
    }
    tiles = [
        {"name": "rows read", "value": _num(read), "note": "", "status": ""},
        {
            "name": "rows kept",
            "value": _num(kept),
            "note": _pct(kept, read) if read else "",
            "status": "",
        },
        {"name": "labels", "value": _num(labels["n_labels"]), "note": "", "status": ""},
        {
            "name": f"median length ({lengths['unit']})",
            "value": _num(lengths["median"]) if lengths["present"] else "—",
            "note": "",
            "status": "",
        },
        {"name": "rows with PII", "value": _num(pii["rows_with_pii"]), "note": "", "status": ""},
    ]
    if splits["present"]:
        tiles.append(
            {
                "name": "split leakage",
                "value": _num(splits["leakage_total"]),
                "note": "",
                "status": "ok" if splits["leakage_total"] == 0 else "bad",
            }
        )
    return {
        "header": header,
        "verdict": _verdict(as_list(report.get("warnings"))),
        "tiles": tiles,
        "flow": _flow(rows, as_dict(report.get("drops")), as_dict(report.get("cleaning"))),
        "too_long": _too_long(as_dict(report.get("too_long"))),
        "duplicates": _duplicates(as_dict(report.get("duplicates"))),
        "pii": pii,
        "labels": labels,
        "lengths": lengths,
        "languages": _languages(as_dict(report.get("languages"))),
        "splits": splits,
        "notes": _notes(as_dict(report.get("input")), header["seconds"]),
        "tool_version": tool_version(),
    }


def _verdict(warnings: list[Any]) -> dict[str, Any]:
    """Warnings sorted most serious first, with the level of the worst one."""
    items = []
    for warning in warnings:
        entry = as_dict(warning)
        level = str(entry.get("level") or "info").lower()
        items.append(
            {
                "level": level if level in _LEVELS else "info",
                "code": str(entry.get("code") or ""),
                "message": str(entry.get("message") or entry.get("code") or ""),
            }
        )
    items.sort(key=lambda item: _LEVELS.index(item["level"]))
    counts = {level: sum(1 for item in items if item["level"] == level) for level in _LEVELS}
    summary = ", ".join(f"{n} {level}{'' if n == 1 else 's'}" for level, n in counts.items() if n)
    if counts["error"] and counts["warning"]:
        advice = "Fix the errors before training; the warnings are worth a look too."
    elif counts["error"]:
        advice = "Fix the errors before training."
    elif counts["warning"]:
        advice = "Nothing blocks training, but the warnings are worth a look."
    else:
        advice = "Nothing blocks training."
    if summary:
        summary = f"{summary}. {advice}"
    return {
        "items": items,
        "worst": items[0]["level"] if items else "ok",
        "summary": summary,
    }


def _flow(
    rows: Mapping[str, Any], drops: Mapping[str, Any], cleaning: Mapping[str, Any]
) -> dict[str, Any]:
    """Rows in and out, drops by reason (chart and table) and in-place text fixes."""
    read = _int(rows.get("read"))
    reasons = sorted(
        ((_humanize(k, _DROP_REASONS), _int(v)) for k, v in drops.items()),
        key=lambda item: -item[1],
    )
    dropped_reasons = [(name, n) for name, n in reasons if n > 0]
    chart = None
    if dropped_reasons:
        chart = svg(
            bar_chart_svg(
                [name for name, _ in dropped_reasons],
                [n for _, n in dropped_reasons],
                title="Rows dropped, by reason",
                width=_CHART_WIDTH,
            )
        )
    return {
        "read": read,
        "kept": _int(rows.get("kept")),
        "dropped": _int(rows.get("dropped")),
        "reasons": [{"name": name, "count": n, "share": _pct(n, read)} for name, n in reasons],
        "chart": chart,
        "cleaning": [
            {"name": _humanize(k, _CLEANING), "count": _int(v)} for k, v in cleaning.items()
        ],
    }


def _too_long(too_long: Mapping[str, Any]) -> dict[str, Any]:
    """Rows over clean.max_chars: how many, what happened to them, and per label."""
    labels = []
    for label, raw in as_dict(too_long.get("by_label")).items():
        entry = as_dict(raw)
        labels.append(
            {
                "name": str(label),
                "count": _int(entry.get("rows")),
                "of_rows": _int(entry.get("of_rows")),
                "share": _pct(entry.get("rows"), entry.get("of_rows")),
            }
        )
    action = str(too_long.get("action") or "")
    return {
        "present": bool(too_long),
        "max_chars": too_long.get("max_chars"),
        "action": action or "—",
        "action_text": {
            "truncate": "each is cut to its first max_chars characters and kept",
            "drop": "each is dropped",
        }.get(action, ""),
        "count": _int(too_long.get("rows")),
        "share": _pct(too_long.get("rows"), too_long.get("of_rows")),
        "labels": [item for item in labels if item["count"]],
        "unaffected_labels": sum(1 for item in labels if not item["count"]),
    }


def _duplicates(dup: Mapping[str, Any]) -> dict[str, Any]:
    """Duplicate counts, the conflict policy and a few kept/dropped example pairs."""
    examples: list[dict[str, str]] = []
    for raw in as_list(dup.get("examples")):
        entry = as_dict(raw)
        example = {
            "kind": str(entry.get("kind") or ""),
            "kept": shorten(entry.get("kept", ""), EXAMPLE_CHARS),
            "dropped": shorten(entry.get("dropped", ""), EXAMPLE_CHARS),
        }
        if example not in examples:  # the same pair can be recorded more than once
            examples.append(example)
    return {
        "exact": _int(dup.get("exact")),
        "near": _int(dup.get("near")),
        "conflicts": _int(dup.get("conflicting_label_groups")),
        "policy": str(dup.get("conflict_policy") or "—"),
        "policy_text": _CONFLICT_POLICIES.get(str(dup.get("conflict_policy") or ""), ""),
        "similar_other_label": (
            _int(dup["similar_with_other_label"])
            if dup.get("similar_with_other_label") is not None
            else None
        ),
        "examples": examples[:MAX_EXAMPLES],
        "more_examples": max(0, len(examples) - MAX_EXAMPLES),
    }


def _pii(pii: Mapping[str, Any]) -> dict[str, Any]:
    """PII mode in words, the types searched and hits by type."""
    mode = str(pii.get("mode") or "")
    hits = [
        {"name": _humanize(k, _PII_TYPES), "key": str(k), "count": _int(v)}
        for k, v in as_dict(pii.get("hits")).items()
    ]
    hits.sort(key=lambda h: -h["count"])
    return {
        "mode": mode or "—",
        "mode_text": _PII_MODES.get(mode.lower(), ""),
        "types": [_humanize(str(t), _PII_TYPES) for t in as_list(pii.get("types"))],
        "rows_with_pii": _int(pii.get("rows_with_pii")),
        "hits": hits,
        "total_hits": sum(h["count"] for h in hits),
    }


def _labels(labels: Mapping[str, Any]) -> dict[str, Any]:
    """The label chart (top labels), how many are left out and the imbalance ratio."""
    counts = sorted(
        ((str(k), _int(v)) for k, v in as_dict(labels.get("counts")).items()),
        key=lambda kv: (-kv[1], kv[0]),
    )
    top, rest = counts[:TOP_LABELS], counts[TOP_LABELS:]
    chart = None
    if counts:
        title = "Rows per label" + (f" (top {len(top)} of {len(counts)})" if rest else "")
        chart = svg(
            bar_chart_svg([k for k, _ in top], [v for _, v in top], title=title, width=_CHART_WIDTH)
        )
    ratio = labels.get("imbalance_ratio")
    n_labels = labels.get("n_labels")
    return {
        "present": bool(counts),
        "n_labels": _int(n_labels) if n_labels is not None else len(counts),
        "imbalance_ratio": _float(ratio) if ratio is not None else None,
        "total": sum(v for _, v in counts),
        "chart": chart,
        "more": len(rest),
        "more_rows": sum(v for _, v in rest),
        "order": [k for k, _ in counts],
    }


def _lengths(lengths: Mapping[str, Any]) -> dict[str, Any]:
    """Length percentiles as a table row and the length histogram."""
    unit = str(lengths.get("unit") or "chars")
    stats = [
        {"name": "median" if key == "p50" else key, "value": lengths.get(key)}
        for key in _LENGTH_STATS
        if key in lengths
    ]
    present = any(s["value"] is not None for s in stats)
    histogram = as_dict(lengths.get("histogram"))
    edges = [_float(e) for e in as_list(histogram.get("edges"))]
    counts = [_int(c) for c in as_list(histogram.get("counts"))]
    chart = None
    if counts and len(edges) == len(counts) + 1 and sum(counts) > 0:
        chart = svg(
            histogram_svg(
                edges,
                counts,
                title=f"Text length ({unit})",
                x_label=f"length in {unit}",
                y_label="rows",
                width=_CHART_WIDTH,
            )
        )
    clipped_at = None
    if chart is not None and _float(lengths.get("max")) > edges[-1]:
        clipped_at = edges[-1]
    return {
        "present": present,
        "unit": unit,
        "clipped_at": clipped_at,
        "stats": stats,
        "median": lengths.get("p50"),
        "chart": chart,
    }


def _languages(languages: Mapping[str, Any]) -> dict[str, Any]:
    """Rows per language group with shares, and a bar chart of them."""
    items = [(_humanize(k, _LANGUAGES), _int(v)) for k, v in languages.items()]
    total = sum(n for _, n in items)
    chart = None
    if total > 0:
        chart = svg(
            bar_chart_svg(
                [name for name, _ in items],
                [n for _, n in items],
                title="Rows per language",
                width=_CHART_WIDTH,
            )
        )
    return {
        "items": [{"name": name, "count": n, "share": _pct(n, total)} for name, n in items],
        "total": total,
        "chart": chart,
    }


def _splits(splits: Mapping[str, Any], label_order: list[str]) -> dict[str, Any]:
    """The split settings, rows and labels per split, groups and the leakage check."""
    parts = {str(k): as_dict(v) for k, v in as_dict(splits.get("parts")).items()}
    if not splits or not parts:
        return {"present": False, "leakage_total": 0}
    part_labels = {name: as_dict(p.get("labels")) for name, p in parts.items()}
    totals: dict[str, int] = {}
    for counts in part_labels.values():
        for label, n in counts.items():
            totals[str(label)] = totals.get(str(label), 0) + _int(n)
    order = [k for k in label_order if k in totals]
    order += sorted((k for k in totals if k not in order), key=lambda k: (-totals[k], k))
    columns = order[:SPLIT_LABEL_COLUMNS]
    has_other = len(order) > len(columns)
    all_rows = sum(_int(p.get("rows")) for p in parts.values())
    has_groups = any(p.get("groups") is not None for p in parts.values())
    table = []
    for name, part in parts.items():
        counts = {str(k): _int(v) for k, v in part_labels[name].items()}
        table.append(
            {
                "name": name,
                "rows": _int(part.get("rows")),
                "share": _pct(part.get("rows"), all_rows),
                "groups": part.get("groups"),
                "labels": [counts.get(c, 0) for c in columns],
                "other": sum(n for k, n in counts.items() if k not in columns),
            }
        )
    chart = None
    if totals and sum(totals.values()) > 0:
        chart = svg(
            stacked_bar_svg(
                list(parts),
                {label: [_int(part_labels[p].get(label)) for p in parts] for label in order},
                title="Label share per split",
                width=_CHART_WIDTH,
            )
        )
    leakage = []
    for key, value in as_dict(splits.get("leakage")).items():
        known = value is not None
        leakage.append(
            {
                "name": _humanize(key, _LEAKAGE),
                "value": _int(value) if known else None,
                "status": "na" if not known else ("ok" if _int(value) == 0 else "bad"),
            }
        )
    fractions = as_dict(splits.get("fractions"))
    group_by = splits.get("group_by")
    return {
        "present": True,
        "fractions": [
            {"name": str(k), "share": f"{100 * _float(v):.0f}%"} for k, v in fractions.items()
        ],
        "seed": splits.get("seed"),
        "stratified": bool(splits.get("stratified")),
        "group_by": str(group_by) if group_by else None,
        "k_folds": splits.get("k_folds"),
        "version": short_hash(splits.get("split_version")),
        "table": table,
        "columns": columns,
        "has_other": has_other,
        "has_groups": has_groups,
        "labeled": bool(totals),
        "chart": chart,
        "leakage": leakage,
        "leakage_total": sum(item["value"] or 0 for item in leakage),
    }


def _notes(source: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """How the input was read: format, encoding, notes and malformed lines."""
    malformed = []
    for entry in as_list(source.get("malformed_lines")):
        pair = as_list(entry)
        if len(pair) >= 2:
            malformed.append({"line": pair[0], "problem": shorten(pair[1], 300)})
        elif pair:
            malformed.append({"line": pair[0], "problem": ""})
    shown = malformed[:MAX_MALFORMED]
    total = max(_int(source.get("malformed_total")), len(malformed))
    return {
        "format": str(source.get("format") or "—"),
        "encoding": str(source.get("encoding") or "—"),
        "notes": [str(n) for n in as_list(source.get("notes"))],
        "malformed": shown,
        "malformed_total": total,
        "malformed_more": total - len(shown),
        "seconds": seconds,
    }
