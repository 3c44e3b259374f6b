"""The evaluation report as one self-contained HTML page.

:func:`render_eval_report_html` turns the ``metrics.json`` dict written by the evaluate
stage into a page that works offline: inline CSS (shared with the data report through
``templates/_report_base.css.j2``), charts as inline SVG (:mod:`aiflywheel.reports.charts`), no
scripts and no links outside the file. The first line is the verdict, the sentence a
product manager acts on; then headline numbers, the model against its baseline, per-class
scores, the confusion matrix, calibration, slices, cross-validation and the mistakes the
model was surest about, with token attributions highlighted when there are some.

The template is ``templates/eval_report.html.j2``, rendered with autoescaping on, so text
from the data (labels, slice values, example texts, tokens) is always escaped. This module
only reshapes the dict; every key may be missing, ``None`` or empty and the page still
renders.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import jinja2

from aiflywheel.reports.charts import heatmap_svg, histogram_svg, line_chart_svg
from aiflywheel.reports.format import (
    as_dict,
    as_list,
    finite_float,
    format_when,
    shorten,
    svg,
    template_environment,
    tool_version,
)

__all__ = ["render_eval_report_html"]

#: Labels drawn in the confusion matrix; the rest (fewest test rows) become "other".
MAX_CONFUSION_LABELS = 20
#: Largest off-diagonal cells listed under the confusion matrix.
TOP_CONFUSIONS = 5
#: Mistakes listed, tokens highlighted per mistake and characters of plain text shown.
MAX_MISTAKES = 25
MAX_TOKENS = 160
MISTAKE_CHARS = 400
#: A slice gap (best minus worst macro-F1) at or above these is flagged.
GAP_WARN = 0.05
GAP_BAD = 0.10

_CHART_WIDTH = 860
_SPECIAL_TOKENS = re.compile(r"^(\[(CLS|SEP|PAD|UNK|MASK)\]|<s>|</s>|<pad>|<unk>|<\|endoftext\|>)$")
_NO_SPACE_BEFORE = set(",.!?;:%)]}'\"、，。！？；：）」』】》…")
_NO_SPACE_AFTER = set("([{'\"（「『【《")
_WORD_MARKERS = ("\u2581", "\u0120")  # SentencePiece "▁" and byte-level BPE "Ġ" start a word


def render_eval_report_html(metrics: Mapping[str, Any]) -> str:
    """Render the evaluate stage's ``metrics`` dict as one self-contained HTML page.

    The dict has the keys of ``metrics.json`` (``feature``, ``labels``, ``test_rows``,
    ``model``, ``baseline``, ``comparison``, ``slices``, ``cross_validation``,
    ``mistakes``, ``verdict``, ...); any of them may be missing, ``None`` or empty, e.g.
    a model without probabilities, no metadata to slice by, or no cross-validation.
    """
    template = _environment().get_template("eval_report.html.j2")
    return template.render(**_view(metrics))


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The package templates' environment with this report's number filters."""
    return template_environment(
        filters={"num": _num, "score": _score, "points": _points, "seconds": _seconds}
    )


# ----------------------------------------------------------------------------- formatting


def _float(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (also for ``True`` and ``False``)."""
    return None if isinstance(value, bool) else finite_float(value)


def _int(value: object) -> int:
    """``value`` as an int; ``None`` or non-numbers are 0."""
    number = _float(value)
    return int(round(number)) if number is not None else 0


def _num(value: object) -> str:
    """A count for people: ``1,728``; ``None`` reads "—"."""
    number = _float(value)
    if number is None:
        return "—"
    return f"{number:,.0f}" if number.is_integer() else f"{number:,.2f}"


def _score(value: object) -> str:
    """A score in [0, 1] with three decimals (``0.912``); ``None`` reads "—"."""
    number = _float(value)
    return "—" if number is None else f"{number:.3f}"


def _points(value: object, sign: bool = True) -> str:
    """A score difference in points (× 100, one decimal, true minus); ``None`` reads "—"."""
    number = _float(value)
    if number is None:
        return "—"
    text = f"{number * 100:+.1f}" if sign else f"{number * 100:.1f}"
    return text.replace("-", "\u2212")


def _seconds(value: object) -> str:
    """A duration: ``0.42 s``, ``12.3 s``, ``3.1 min``, ``2.4 h``; ``None`` reads "—"."""
    number = _float(value)
    if number is None:
        return "—"
    if number < 10:
        return f"{number:.2f} s"
    if number < 120:
        return f"{number:.1f} s"
    if number < 7200:
        return f"{number / 60:.1f} min"
    return f"{number / 3600:.1f} h"


def _unsigned_points(value: object) -> str:
    """A score difference in points without a plus sign (minus signs are kept)."""
    return _points(value, sign=False)


def _interval(ci: object, formatter: Any = _score) -> str:
    """A ``[lo, hi]`` pair as ``0.900–0.925``, or "" when it is missing."""
    pair = as_list(ci)
    if len(pair) != 2 or _float(pair[0]) is None or _float(pair[1]) is None:
        return ""
    lo, hi = formatter(pair[0]), formatter(pair[1])
    joiner = " to " if lo.startswith("\u2212") or hi.startswith("\u2212") else "\u2013"
    return f"{lo}{joiner}{hi}"


def _p_value(comparison: Mapping[str, Any]) -> str:
    """The one-sided p-value as ``p = 0.012`` or, when no resample said otherwise, ``p < …``."""
    p = _float(comparison.get("p_value"))
    if p is None:
        return ""
    n = _int(comparison.get("n_resamples"))
    if p == 0 and n > 0:
        return f"p < {1 / n:g}"
    return f"p = {p:.3f}"


# ----------------------------------------------------------------------------- sections


def _view(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, one entry per page section."""
    model = as_dict(metrics.get("model"))
    baseline = as_dict(metrics.get("baseline"))
    model_m = as_dict(model.get("metrics"))
    base_m = as_dict(baseline.get("metrics"))
    comparison = as_dict(metrics.get("comparison"))
    labels = [str(x) for x in as_list(metrics.get("labels"))]
    names = {
        "model": str(model.get("name") or model.get("alias") or "model"),
        "baseline": str(baseline.get("name") or "baseline"),
    }
    header = {
        "feature": str(metrics.get("feature") or "unnamed feature"),
        "version": str(metrics.get("version") or "—"),
        "generated": format_when(metrics.get("generated_at")),
        "generated_iso": str(metrics.get("generated_at") or ""),
        "method": str(model.get("method") or ""),
        "test_rows": metrics.get("test_rows"),
        "n_labels": len(labels) or len(as_dict(model_m.get("per_class"))),
    }
    compare = _comparison(comparison)
    return {
        "header": header,
        "names": names,
        "verdict": _verdict(str(metrics.get("verdict") or ""), compare),
        "compare": compare,
        "tiles": _tiles(metrics, model, baseline, compare),
        "table": _model_table(model, baseline),
        "per_class": _per_class(labels, model_m, base_m),
        "confusion": _confusion(as_dict(model_m.get("confusion")), names["model"]),
        "calibration": _calibration(model_m, base_m, names),
        "slices": _slices(as_dict(metrics.get("slices"))),
        "cv": _cross_validation(metrics.get("cross_validation")),
        "auto": _auto(metrics.get("auto")),
        "pretrain": _pretrain(metrics.get("pretrain")),
        "mistakes": _mistakes(as_list(metrics.get("mistakes"))),
        "tool_version": tool_version(),
    }


def _comparison(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """The paired bootstrap in words: the difference, its interval and its p-value."""
    diff = _float(comparison.get("diff"))
    ci = as_list(comparison.get("ci"))
    lo = _float(ci[0]) if len(ci) == 2 else None
    hi = _float(ci[1]) if len(ci) == 2 else None
    if lo is not None and lo > 0:
        outcome = "better"
    elif hi is not None and hi < 0:
        outcome = "worse"
    elif lo is not None and hi is not None:
        outcome = "unclear"
    else:
        outcome = "unknown"
    level = _float(comparison.get("confidence")) or 0.95
    return {
        "present": diff is not None,
        "diff": diff,
        "ci": _interval(ci, _unsigned_points) if lo is not None else "",
        "ci_name": f"{level * 100:.0f}% CI",
        "p": _p_value(comparison),
        "n_resamples": _int(comparison.get("n_resamples")),
        "outcome": outcome,
        "status": {"better": "ok", "worse": "bad", "unclear": "warn"}.get(outcome, ""),
    }


def _verdict(text: str, compare: Mapping[str, Any]) -> dict[str, str]:
    """The verdict sentence and the colour of its box (green, amber, red or blue)."""
    level = {"better": "ok", "worse": "error", "unclear": "warning"}.get(compare["outcome"], "info")
    if not text:
        text = "No verdict was recorded: the model was not compared with a baseline."
    return {"text": text, "level": level}


def _tiles(
    metrics: Mapping[str, Any],
    model: Mapping[str, Any],
    baseline: Mapping[str, Any],
    compare: Mapping[str, Any],
) -> list[dict[str, str]]:
    """The headline numbers: scores with intervals, the difference, times and test rows."""
    model_m, base_m = as_dict(model.get("metrics")), as_dict(baseline.get("metrics"))
    model_ci = _interval(model.get("macro_f1_ci"))
    base_ci = _interval(baseline.get("macro_f1_ci"))
    diff_note = " · ".join(
        part
        for part in (f"{compare['ci_name']} {compare['ci']}" if compare["ci"] else "", compare["p"])
        if part
    )
    return [
        {
            "name": "model macro-F1",
            "value": _score(model_m.get("macro_f1")),
            "note": f"95% CI {model_ci}" if model_ci else "",
            "status": "",
        },
        {
            "name": "vs baseline",
            "value": f"{_points(compare['diff'])} pts" if compare["present"] else "—",
            "note": diff_note,
            "status": compare["status"],
        },
        {
            "name": "model accuracy",
            "value": _score(model_m.get("accuracy")),
            "note": "",
            "status": "",
        },
        {
            "name": "baseline macro-F1",
            "value": _score(base_m.get("macro_f1")),
            "note": f"95% CI {base_ci}" if base_ci else "",
            "status": "",
        },
        {
            "name": "train time",
            "value": _seconds(model.get("train_seconds")),
            "note": f"baseline {_seconds(baseline.get('train_seconds'))}",
            "status": "",
        },
        {"name": "test rows", "value": _num(metrics.get("test_rows")), "note": "", "status": ""},
    ]


_TABLE_ROWS = (
    # key, display name, higher is better
    ("accuracy", "accuracy", True),
    ("macro_f1", "macro-F1", True),
    ("micro_f1", "micro-F1", True),
    ("macro_precision", "macro precision", True),
    ("macro_recall", "macro recall", True),
    ("roc_auc", "ROC-AUC", True),
    ("ece", "expected calibration error", False),
)


def _model_table(model: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[dict[str, str]]:
    """Model against baseline, metric by metric, with the difference in points."""
    model_m, base_m = as_dict(model.get("metrics")), as_dict(baseline.get("metrics"))
    rows = []
    for key, name, higher_is_better in _TABLE_ROWS:
        if key == "ece":
            a = _float(as_dict(model_m.get("calibration")).get("ece"))
            b = _float(as_dict(base_m.get("calibration")).get("ece"))
        else:
            a, b = _float(model_m.get(key)), _float(base_m.get(key))
        if a is None and b is None and key == "roc_auc":
            continue  # only binary tasks have one
        diff = a - b if a is not None and b is not None else None
        status = ""
        if diff is not None and abs(diff) >= 0.0005:
            status = "ok" if (diff > 0) == higher_is_better else "bad"
        rows.append(
            {
                "name": name,
                "hint": "" if higher_is_better else "lower is better",
                "model": _score(a),
                "baseline": _score(b),
                "diff": f"{_points(diff)} pts" if diff is not None else "—",
                "status": status,
            }
        )
    a_time, b_time = _float(model.get("train_seconds")), _float(baseline.get("train_seconds"))
    ratio = ""
    if a_time is not None and b_time:
        ratio = f"{a_time / b_time:,.1f}× the baseline"
    rows.append(
        {
            "name": "train time",
            "hint": "",
            "model": _seconds(a_time),
            "baseline": _seconds(b_time),
            "diff": ratio or "—",
            "status": "",
        }
    )
    return rows


def _per_class(
    labels: list[str], model_m: Mapping[str, Any], base_m: Mapping[str, Any]
) -> dict[str, Any]:
    """Precision, recall and F1 of every label for both models, and the F1 difference."""
    model_pc, base_pc = as_dict(model_m.get("per_class")), as_dict(base_m.get("per_class"))
    order = list(labels)
    order += [str(k) for k in model_pc if str(k) not in order]
    order += [str(k) for k in base_pc if str(k) not in order]
    rows = []
    for label in order:
        a, b = as_dict(model_pc.get(label)), as_dict(base_pc.get(label))
        f1_a, f1_b = _float(a.get("f1")), _float(b.get("f1"))
        diff = f1_a - f1_b if f1_a is not None and f1_b is not None else None
        status = ""
        if diff is not None and abs(diff) >= 0.0005:
            status = "ok" if diff > 0 else "bad"
        support = a.get("support", b.get("support"))
        rows.append(
            {
                "label": label,
                "support": support,
                "absent": _int(support) == 0,
                "model": [_score(a.get(k)) for k in ("precision", "recall", "f1")],
                "baseline": [_score(b.get(k)) for k in ("precision", "recall", "f1")],
                "diff": _points(diff),
                "status": status,
                "f1": f1_a,
            }
        )
    scored = [r for r in rows if r["f1"] is not None and not r["absent"]]
    weakest = min(scored, key=lambda r: r["f1"])["label"] if len(scored) > 1 else None
    return {"rows": rows, "weakest": weakest}


def _confusion(confusion: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """The model's confusion matrix as a heatmap (largest labels) and its top mistakes."""
    labels = [str(x) for x in as_list(confusion.get("labels"))]
    matrix = [[_int(v) for v in as_list(row)] for row in as_list(confusion.get("matrix"))]
    if not labels or len(matrix) != len(labels) or any(len(r) != len(labels) for r in matrix):
        return {"chart": None, "top": [], "merged": 0}
    support = [sum(row) for row in matrix]
    top_pairs = []
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if i != j and count > 0:
                top_pairs.append(
                    {
                        "true": labels[i],
                        "predicted": labels[j],
                        "count": count,
                        "share": f"{100 * count / support[i]:.1f}%" if support[i] else "—",
                    }
                )
    top_pairs.sort(key=lambda c: -c["count"])
    shown, merged = labels, 0
    grid = matrix
    if len(labels) > MAX_CONFUSION_LABELS:
        keep = sorted(range(len(labels)), key=lambda i: (-support[i], i))[
            : MAX_CONFUSION_LABELS - 1
        ]
        keep.sort()
        rest = [i for i in range(len(labels)) if i not in keep]
        merged = len(rest)

        def group(i: int) -> int:
            return keep.index(i) if i in keep else len(keep)

        grid = [[0] * (len(keep) + 1) for _ in range(len(keep) + 1)]
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                grid[group(i)][group(j)] += count
        shown = [labels[i] for i in keep] + [f"other ({merged} labels)"]
    chart = None
    if any(any(row) for row in grid):
        chart = svg(
            heatmap_svg(
                shown,
                shown,
                grid,
                title=f"Confusion matrix · {model_name}",
                x_label="predicted label",
                y_label="true label",
                normalize="rows",
                highlight_diagonal=True,
                width=_CHART_WIDTH,
            )
        )
    return {"chart": chart, "top": top_pairs[:TOP_CONFUSIONS], "merged": merged}


def _calibration(
    model_m: Mapping[str, Any], base_m: Mapping[str, Any], names: Mapping[str, str]
) -> dict[str, Any]:
    """The reliability diagram, the confidence histogram and the ECE of both models."""
    calib = as_dict(model_m.get("calibration"))
    bins = [as_dict(b) for b in as_list(calib.get("bins"))]
    filled = [
        b for b in bins if _int(b.get("count")) > 0 and _float(b.get("confidence")) is not None
    ]
    reliability = histogram = None
    if filled:
        xs = [0.0] + [_float(b["confidence"]) or 0.0 for b in filled] + [1.0]
        accuracy = [math.nan] + [_float(b.get("accuracy")) or 0.0 for b in filled] + [math.nan]
        reliability = svg(
            line_chart_svg(
                xs,
                {names["model"]: accuracy, "perfect calibration": xs},
                title="Reliability: accuracy at each confidence level",
                x_label="confidence (probability of the predicted label)",
                y_label="accuracy",
                x_range=(0.0, 1.0),
                y_range=(0.0, 1.0),
                dashed=["perfect calibration"],
                width=_CHART_WIDTH,
                height=320,
            )
        )
        edges = [_float(bins[0].get("lo")) or 0.0] + [_float(b.get("hi")) or 0.0 for b in bins]
        if all(b > a for a, b in zip(edges, edges[1:], strict=False)):
            histogram = svg(
                histogram_svg(
                    edges,
                    [_int(b.get("count")) for b in bins],
                    title="Test rows per confidence bin",
                    x_label="confidence",
                    y_label="rows",
                    width=_CHART_WIDTH,
                    height=200,
                )
            )
    overconfident = [
        b
        for b in filled
        if (_float(b.get("confidence")) or 0) - (_float(b.get("accuracy")) or 0) > 0.05
    ]
    return {
        "present": bool(calib),
        "ece": _float(calib.get("ece")),
        "baseline_ece": _float(as_dict(base_m.get("calibration")).get("ece")),
        "reliability": reliability,
        "histogram": histogram,
        "overconfident_rows": sum(_int(b.get("count")) for b in overconfident),
        "rows": sum(_int(b.get("count")) for b in bins),
    }


def _gap_status(gap: float | None) -> str:
    """``bad`` for a large slice gap, ``warn`` for a noticeable one, else ``ok``."""
    if gap is None:
        return ""
    if gap >= GAP_BAD:
        return "bad"
    return "warn" if gap >= GAP_WARN else "ok"


def _slices(slices: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One table per metadata column: scored values, best and worst, and the gap."""
    out = []
    for column, raw in slices.items():
        result = as_dict(raw)
        best = as_dict(result.get("best")).get("value")
        worst = as_dict(result.get("worst")).get("value")
        rows = []
        for value, scores in as_dict(result.get("values")).items():
            entry = as_dict(scores)
            mark = ""
            if best != worst:
                mark = "best" if value == best else "worst" if value == worst else ""
            rows.append(
                {
                    "value": str(value),
                    "n": entry.get("n"),
                    "accuracy": _score(entry.get("accuracy")),
                    "macro_f1": _score(entry.get("macro_f1")),
                    "mark": mark,
                }
            )
        gap = _float(result.get("gap"))
        out.append(
            {
                "column": str(column),
                "rows": rows,
                "gap": gap,
                "gap_status": _gap_status(gap),
                "best": str(best) if best is not None else None,
                "worst": str(worst) if worst is not None else None,
                "small": _int(result.get("small_slices")),
                "small_rows": _int(result.get("small_rows")),
                "min_support": result.get("min_support"),
            }
        )
    return out


def _cross_validation(cv: object) -> dict[str, Any] | None:
    """Mean ± standard deviation of macro-F1 over the folds, and each fold's score."""
    entry = as_dict(cv)
    if not entry:
        return None
    folds = [_score(v) for v in as_list(entry.get("per_fold"))]
    return {
        "k": entry.get("k") or len(folds) or None,
        "mean": _score(entry.get("macro_f1_mean")),
        "std": _score(entry.get("macro_f1_std")),
        "folds": folds,
    }


def _auto(entry: object) -> dict[str, Any] | None:
    """What method auto tried: each candidate's validation macro-F1, seconds and note."""
    entry = as_dict(entry)
    if not entry:
        return None
    return {
        "chosen": str(entry.get("chosen") or ""),
        "candidates": [
            {
                "method": str(c.get("method") or ""),
                "f1": _score(c.get("val_macro_f1")),
                "seconds": _seconds(c.get("seconds")),
                "note": str(c.get("note") or ""),
            }
            for c in map(as_dict, as_list(entry.get("candidates")))
        ],
    }


def _pretrain(details: object) -> dict[str, Any] | None:
    """With and without domain pre-training on the test rows, the paired CI, the MLM run."""
    entry = as_dict(details)
    if not entry:
        return None
    mlm, texts = as_dict(entry.get("mlm")), as_dict(entry.get("texts"))
    comparison = as_dict(entry.get("comparison"))

    def side(key: str) -> dict[str, str]:
        figures = as_dict(entry.get(key))
        return {
            "name": str(figures.get("name") or key),
            "macro_f1": _score(figures.get("macro_f1")),
            "ci": _interval(figures.get("macro_f1_ci")),
            "accuracy": _score(figures.get("accuracy")),
            "seconds": _seconds(figures.get("train_seconds")),
            "preferred": entry.get("preferred") == f"{key}-pretrain",
        }

    return {
        "reason": str(entry.get("reason") or ""),
        "rows": [side("with"), side("without")],
        "gain": _points(comparison.get("diff")),
        "gain_ci": _interval(comparison.get("ci"), _points),
        "p_value": _p_value(comparison),
        "loss_before": _float(mlm.get("heldout_loss_before")),
        "loss_after": _float(mlm.get("heldout_loss_after")),
        "ppl_before": _num(mlm.get("perplexity_before")),
        "ppl_after": _num(mlm.get("perplexity_after")),
        "steps": _num(mlm.get("steps")),
        "minutes": _seconds(mlm.get("seconds")),
        "head_init": str(mlm.get("head_init") or ""),
        "texts": {k: _num(v) for k, v in texts.items()},
        "source": str(entry.get("source") or ""),
    }


def _mistakes(mistakes: list[Any]) -> list[dict[str, Any]]:
    """The most confident mistakes, with highlighted tokens when there are attributions."""
    out = []
    for raw in mistakes[:MAX_MISTAKES]:
        entry = as_dict(raw)
        confidence = _float(entry.get("confidence"))
        tokens, more = _tokens(entry.get("attributions"))
        out.append(
            {
                "text": shorten(entry.get("text", ""), MISTAKE_CHARS),
                "label": str(entry.get("label", "")),
                "predicted": str(entry.get("predicted", "")),
                "confidence": f"{100 * confidence:.1f}%" if confidence is not None else "—",
                "tokens": tokens,
                "more_tokens": more,
            }
        )
    return out


def _is_wide(ch: str) -> bool:
    """Whether ``ch`` is an East Asian wide character, written without spaces around it."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _tokens(attributions: object) -> tuple[list[dict[str, Any]], int]:
    """Tokens with a background colour for their attribution score, and how many were cut.

    Positive scores (pushing toward the predicted, wrong label) are red and negative
    ones green, with an opacity proportional to ``|score|`` over the example's largest.
    Sub-word markers (``##``, ``▁``, ``Ġ``) are turned back into spacing, and special
    tokens such as ``[CLS]`` are left out. When some tokens hold whitespace, the tokens
    are pieces of the text as written and are joined as they are.
    """
    pairs: list[tuple[str, float]] = []
    for item in as_list(attributions):
        pair = as_list(item)
        if len(pair) < 2 or _SPECIAL_TOKENS.match(str(pair[0])):
            continue
        pairs.append((str(pair[0]), _float(pair[1]) or 0.0))
    if not pairs:
        return [], 0
    marked_words = any(token.startswith(_WORD_MARKERS) for token, _ in pairs)
    verbatim = any(not token.strip() or token != token.strip() for token, _ in pairs)
    top = max(abs(score) for _, score in pairs) or 1.0
    out = []
    previous = ""
    for i, (token, score) in enumerate(pairs[:MAX_TOKENS]):
        text, space = token, False
        if verbatim:
            pass
        elif text.startswith("##"):
            text = text[2:]
        elif marked_words:
            space = text.startswith(_WORD_MARKERS) and i > 0
            text = text.lstrip("".join(_WORD_MARKERS))
        elif previous and text:
            space = not (
                _is_wide(text[0])
                or _is_wide(previous[-1])
                or text[0] in _NO_SPACE_BEFORE
                or previous[-1] in _NO_SPACE_AFTER
            )
        if not text:
            continue
        weight = abs(score) / top
        color = "207, 34, 46" if score > 0 else "26, 127, 55"
        out.append(
            {
                "text": text,
                "space": space,
                "style": f"background-color: rgba({color}, {0.08 + 0.6 * weight:.2f})"
                if score
                else "",
                "title": f"{score:+.3f}",
            }
        )
        previous = text
    return out, max(0, len(pairs) - MAX_TOKENS)
