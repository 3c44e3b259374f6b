"""Small inline-SVG charts for self-contained HTML reports (no JavaScript, no assets).

Every function returns one ``<svg>`` element as a string, ready to be placed inside an
HTML page. The element carries no XML namespace declaration (HTML does not need one), a
``viewBox`` so CSS can scale it, a ``<title>`` naming the chart for screen readers, and
a ``<title>`` on every bar or point so a browser shows the exact value on hover.

All text is escaped, so labels may hold any characters: Chinese, ``<``, ``&``, quotes,
even control characters (replaced by U+FFFD). Empty input, all-zero values and
non-finite numbers never divide by zero: a chart with nothing to draw renders a short
"no data" note instead. Mismatched lengths are a programming error and raise
``ValueError``.

Charts: :func:`bar_chart_svg` (one value per label, horizontal or vertical),
:func:`histogram_svg` (counts between bin edges), :func:`stacked_bar_svg` (the share of
each series inside each category, e.g. label share per split) and
:func:`line_chart_svg` (one or more y series over shared x values, e.g. a reliability
plot) and :func:`heatmap_svg` (a grid of shaded cells, e.g. a confusion matrix).
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from itertools import pairwise

__all__ = [
    "PALETTE",
    "bar_chart_svg",
    "heatmap_svg",
    "histogram_svg",
    "line_chart_svg",
    "stacked_bar_svg",
]

#: Series colours (Tableau 10 without its grey, which is kept for "other").
PALETTE: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#2f4b7c",
)
_OTHER_COLOR = "#bab0ac"
_BAR_COLOR = PALETTE[0]
_ERROR_COLOR = PALETTE[3]
_EMPTY_CELL = "#f6f8fa"
_INK = "#1f2328"
_MUTED = "#656d76"
_GRID = "#d8dee4"
_FONT = (
    "system-ui, -apple-system, 'Segoe UI', 'PingFang SC', 'Hiragino Sans GB', "
    "'Microsoft YaHei', 'Noto Sans CJK SC', sans-serif"
)
_FONT_SIZE = 12.0
_TITLE_SIZE = 13.0
_PAD = 8.0
_TITLE_H = 28.0

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# ----------------------------------------------------------------------------- text


def _clean(text: object) -> str:
    """``text`` as one display line: XML-invalid characters replaced, whitespace collapsed."""
    return " ".join(_XML_INVALID.sub("\ufffd", str(text)).split())


def _esc(text: object) -> str:
    """``text`` cleaned and escaped for use in SVG/HTML text and attribute values."""
    return html.escape(_clean(text), quote=True)


def _text_width(text: str, size: float = _FONT_SIZE) -> float:
    """A rough rendered width in pixels; East Asian wide characters count as a full em."""
    em = 0.0
    for ch in text:
        if unicodedata.east_asian_width(ch) in ("W", "F"):
            em += 1.0
        elif ch in "ijlI.,:;|!' ":
            em += 0.34
        elif ch.isupper() or ch in "mwMW%@":
            em += 0.75
        else:
            em += 0.62
    return em * size


def _fit(text: str, max_px: float, size: float = _FONT_SIZE) -> str:
    """``text`` shortened with an ellipsis so that it is at most ``max_px`` wide."""
    if _text_width(text, size) <= max_px:
        return text
    ellipsis_w = _text_width("…", size)
    out = text
    while out and _text_width(out, size) + ellipsis_w > max_px:
        out = out[:-1]
    return out.rstrip() + "…"


def _n(value: float) -> str:
    """A coordinate with at most one decimal and no trailing zeros."""
    out = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


def _format(value_format: str, value: float) -> str:
    """``value`` formatted for display; non-finite values read "n/a"."""
    if not math.isfinite(value):
        return "n/a"
    return value_format.format(value)


def _plain(value: float) -> str:
    """A whole number with thousands separators, or a fraction with two decimals."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _decimals(step: float) -> int:
    """The fewest decimals that write ``step`` exactly (at most 6)."""
    for digits in range(7):
        if abs(round(step, digits) - step) <= 1e-9 * max(abs(step), 1e-12):
            return digits
    return 6


def _compact(value: float) -> str:
    """A short axis label: ``950``, ``12.5k``, ``3.2M``, ``0.25``."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}"


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels for evenly spaced ticks, all with the same number of decimals."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    top = max(abs(t) for t in ticks)
    scale, suffix = (1e6, "M") if top >= 1e6 else (1e3, "k") if top >= 1e4 else (1.0, "")
    digits = _decimals(step / scale)
    return [f"{t / scale + 0.0:,.{digits}f}{suffix}" for t in ticks]


def _nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 × 10^k) covering [lo, hi].

    With ``integer`` the step is a whole number, for counts that cannot be fractional.
    """
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    steps = [mult * magnitude for mult in (1.0, 2.0, 2.5, 5.0, 10.0)]
    if integer:
        steps = [s for s in steps if s >= 1 and abs(s - round(s)) < 1e-9] or [1.0]
    step = next((s for s in steps if s >= raw * (1 - 1e-9)), steps[-1])
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    n_steps = max(1, round((stop - start) / step))
    return [round(start + i * step, 10) + 0.0 for i in range(n_steps + 1)]


def _finite(values: Sequence[float]) -> list[float]:
    """The finite values among ``values``, as floats."""
    out = []
    for value in values:
        v = float(value)
        if math.isfinite(v):
            out.append(v)
    return out


def _as_float(value: float) -> float:
    """``value`` as a float, or NaN when it is not a finite number."""
    v = float(value)
    return v if math.isfinite(v) else math.nan


def _text_color_on(fill: str) -> str:
    """Dark or white text, whichever reads better on the hex colour ``fill``."""
    r, g, b = (int(fill[i : i + 2], 16) / 255 for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return _INK if luminance > 0.55 else "#ffffff"


# ----------------------------------------------------------------------------- svg parts


def _open(width: float, height: float, title: str) -> list[str]:
    """The opening of an svg element with its accessible title and visible heading."""
    return [
        f'<svg class="chart" viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" '
        f'height="{_n(height)}" role="img" font-family="{_FONT}" '
        f'font-size="{_n(_FONT_SIZE)}" fill="{_INK}">',
        f"<title>{_esc(title)}</title>",
        _text(
            _PAD,
            18,
            _fit(_clean(title), width - 2 * _PAD, _TITLE_SIZE),
            size=_TITLE_SIZE,
            weight="600",
        ),
    ]


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    size: float | None = None,
    fill: str | None = None,
    weight: str | None = None,
    transform: str | None = None,
    tooltip: str | None = None,
) -> str:
    """One ``<text>`` element; ``text`` is escaped here."""
    attrs = [f'x="{_n(x)}"', f'y="{_n(y)}"']
    if anchor != "start":
        attrs.append(f'text-anchor="{anchor}"')
    if size is not None:
        attrs.append(f'font-size="{_n(size)}"')
    if fill is not None:
        attrs.append(f'fill="{fill}"')
    if weight is not None:
        attrs.append(f'font-weight="{weight}"')
    if transform is not None:
        attrs.append(f'transform="{transform}"')
    inner = _esc(text)
    if tooltip is not None:
        inner = f"<title>{_esc(tooltip)}</title>{inner}"
    return f"<text {' '.join(attrs)}>{inner}</text>"


def _rect(x: float, y: float, w: float, h: float, fill: str, tooltip: str | None) -> str:
    """One ``<rect>`` with an optional hover title."""
    head = f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0.0))}" height="{_n(max(h, 0.0))}"'
    head += f' fill="{fill}"'
    if tooltip is None:
        return head + "/>"
    return f"{head}><title>{_esc(tooltip)}</title></rect>"


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str = _GRID) -> str:
    """One thin ``<line>``."""
    return (
        f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" '
        f'stroke="{stroke}" stroke-width="1"/>'
    )


def _no_data(title: str, width: float, note: str = "no data") -> str:
    """A short chart that only says there is nothing to draw."""
    height = 64.0
    parts = _open(width, height, title)
    parts.append(_rect(_PAD, 28, width - 2 * _PAD, 26, "#f6f8fa", None))
    parts.append(_text(width / 2, 45, note, anchor="middle", fill=_MUTED))
    parts.append("</svg>")
    return "".join(parts)


def _legend(
    items: Sequence[tuple[str, str]], x0: float, y0: float, max_x: float
) -> tuple[list[str], float]:
    """Legend swatches flowing left to right and wrapping; returns parts and its height."""
    parts: list[str] = []
    x, y, row_h = x0, y0, 18.0
    max_text = max(40.0, max_x - x0 - 20)
    for name, color in items:
        shown = _fit(_clean(name), max_text)
        item_w = 14 + _text_width(shown) + 14
        if x > x0 and x + item_w > max_x:
            x, y = x0, y + row_h
        parts.append(_rect(x, y + 3, 10, 10, color, None))
        parts.append(_text(x + 14, y + 12, shown, tooltip=name if shown != _clean(name) else None))
        x += item_w
    return parts, (y - y0 + row_h) if items else 0.0


def _check_same_length(what: str, a: Sequence[object], b: Sequence[object]) -> None:
    """Raise ``ValueError`` when two parallel sequences differ in length."""
    if len(a) != len(b):
        raise ValueError(f"{what}: lengths differ ({len(a)} vs {len(b)})")


# ----------------------------------------------------------------------------- charts


def bar_chart_svg(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    value_format: str = "{:,.0f}",
    horizontal: bool = True,
    width: int = 560,
) -> str:
    """One bar per label, in the given order, with its value written next to it.

    Horizontal bars (the default) suit long or many labels; vertical bars suit a few
    short ones. Negative values grow to the left of (or below) a zero line. Labels too
    long for their space are shortened with "…"; the full label and value show on hover.
    Empty input, or values that are all zero or non-finite, give a "no data" note.

    Raises:
        ValueError: ``labels`` and ``values`` differ in length.
    """
    _check_same_length("bar_chart_svg labels and values", labels, values)
    nums = [_as_float(v) for v in values]
    finite = _finite(nums)
    if not finite or all(v == 0 for v in finite):
        return _no_data(title, width)
    names = [_clean(label) for label in labels]
    shown_values = [_format(value_format, v) for v in nums]
    tooltips = [f"{name}: {shown}" for name, shown in zip(names, shown_values, strict=True)]
    lo, hi = min(0.0, *finite), max(0.0, *finite)
    if horizontal:
        return _hbar(names, nums, shown_values, tooltips, title, float(width), lo, hi)
    return _vbar(names, nums, shown_values, tooltips, title, float(width), lo, hi)


def _hbar(
    names: list[str],
    nums: list[float],
    shown_values: list[str],
    tooltips: list[str],
    title: str,
    width: float,
    lo: float,
    hi: float,
) -> str:
    """Horizontal bars: labels on the left, values at the end of each bar."""
    row_h, bar_h = 22.0, 14.0
    label_w = min(max(_text_width(n) for n in names), width * 0.38) + 8
    value_w = max(_text_width(v) for v in shown_values) + 8
    x0 = _PAD + label_w
    plot_w = max(width - x0 - value_w - _PAD, 40.0)
    height = _TITLE_H + len(names) * row_h + _PAD

    def sx(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * plot_w

    zero = sx(0.0)
    parts = _open(width, height, title)
    for i, (name, value) in enumerate(zip(names, nums, strict=True)):
        top = _TITLE_H + i * row_h
        baseline = top + row_h / 2 + 4
        shown = _fit(name, label_w - 8)
        parts.append(
            _text(x0 - 6, baseline, shown, anchor="end", tooltip=name if shown != name else None)
        )
        if math.isfinite(value) and value != 0:
            length = max(abs(sx(value) - zero), 1.0)  # a non-zero value stays visible
            left = zero - length if value < 0 else zero
            parts.append(
                _rect(left, top + (row_h - bar_h) / 2, length, bar_h, _BAR_COLOR, tooltips[i])
            )
        parts.append(
            _text(
                max(zero, sx(value) if math.isfinite(value) else zero) + 4,
                baseline,
                shown_values[i],
                fill=_MUTED,
            )
        )
    parts.append(_line(zero, _TITLE_H - 2, zero, height - _PAD + 2, _MUTED))
    parts.append("</svg>")
    return "".join(parts)


def _vbar(
    names: list[str],
    nums: list[float],
    shown_values: list[str],
    tooltips: list[str],
    title: str,
    width: float,
    lo: float,
    hi: float,
) -> str:
    """Vertical bars over a y axis with gridlines; labels rotate when they do not fit."""
    height = 240.0
    ticks = _nice_ticks(lo, hi, integer=all(float(v).is_integer() for v in _finite(nums)))
    lo, hi = ticks[0], ticks[-1]
    tick_text = _tick_labels(ticks)
    x0 = _PAD + max(_text_width(t) for t in tick_text) + 6
    plot_w = max(width - x0 - _PAD, 40.0)
    slot = plot_w / len(names)
    longest = max(_text_width(n) for n in names)
    rotate = longest > slot - 4
    steep = rotate and slot * 0.64 < 15  # labels at 40° would overlap: stand them upright
    angle = 90 if steep else 40
    stride = max(1, math.ceil(15 / slot)) if steep else 1  # every label, or every k-th
    max_label = 110.0 if rotate else slot - 4
    bottom = (min(longest, max_label) * (1.0 if steep else 0.65) + 18) if rotate else 22.0
    top = _TITLE_H + 14
    plot_h = max(height - top - bottom, 40.0)

    def sy(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    parts = _open(width, height, title)
    for tick, label in zip(ticks, tick_text, strict=True):
        parts.append(_line(x0, sy(tick), x0 + plot_w, sy(tick)))
        parts.append(_text(x0 - 4, sy(tick) + 4, label, anchor="end", fill=_MUTED))
    zero = sy(0.0)
    show_values = max(_text_width(v) for v in shown_values) <= slot - 2
    for i, (name, value) in enumerate(zip(names, nums, strict=True)):
        centre = x0 + (i + 0.5) * slot
        if math.isfinite(value):
            length = max(abs(sy(value) - zero), 1.0) if value != 0 else 0.0
            upper = zero - length if value > 0 else zero
            bar_w = slot * 0.7
            if length:
                parts.append(
                    _rect(centre - bar_w / 2, upper, bar_w, length, _BAR_COLOR, tooltips[i])
                )
            if show_values:
                parts.append(
                    _text(centre, upper - 3, shown_values[i], anchor="middle", fill=_MUTED)
                )
        if i % stride:
            continue
        shown = _fit(name, max_label)
        tip = name if shown != name else None
        y_label = top + plot_h + (8 if steep else 14)
        if rotate:
            parts.append(
                _text(
                    centre + 4,
                    y_label,
                    shown,
                    anchor="end",
                    tooltip=tip,
                    transform=f"rotate(-{angle} {_n(centre + 4)} {_n(y_label)})",
                )
            )
        else:
            parts.append(_text(centre, y_label, shown, anchor="middle", tooltip=tip))
    parts.append(_line(x0, zero, x0 + plot_w, zero, _MUTED))
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    title: str,
    x_label: str,
    width: int = 560,
    height: int = 220,
    y_label: str = "count",
) -> str:
    """Counts between consecutive bin ``edges`` (``len(edges) == len(counts) + 1``).

    Bins are drawn side by side with equal widths and the edge values written under
    their boundaries, so evenly spaced edges give an ordinary histogram and uneven ones
    (e.g. 0, 10, 20, 50, 100, …) stay readable instead of crowding into one corner.
    Empty or all-zero counts give a "no data" note.

    Raises:
        ValueError: the lengths do not match or the edges are not increasing.
    """
    if len(edges) != len(counts) + 1 and (counts or len(edges) > 1):
        raise ValueError(
            f"histogram_svg needs len(edges) == len(counts) + 1, "
            f"got {len(edges)} edges and {len(counts)} counts"
        )
    bounds = [float(e) for e in edges]
    if any(not b > a for a, b in pairwise(bounds)):
        raise ValueError(f"histogram_svg edges must be strictly increasing, got {list(edges)}")
    heights = [max(v, 0.0) if math.isfinite(v) else 0.0 for v in map(_as_float, counts)]
    if not heights or max(heights) == 0:
        return _no_data(title, width)

    w, h = float(width), float(height)
    ticks = _nice_ticks(0.0, max(heights), 4, integer=True)
    tick_text = _tick_labels(ticks)
    x0 = _PAD + max(_text_width(t) for t in tick_text) + 6
    edge_text = [_compact(b) for b in bounds]
    top = _TITLE_H + 20
    bottom = 38.0
    plot_w = max(w - x0 - max(_PAD + 6, _text_width(edge_text[-1]) / 2 + 4), 40.0)
    plot_h = max(h - top - bottom, 30.0)
    ymax = ticks[-1]
    bin_w = plot_w / len(heights)

    def sy(v: float) -> float:
        return top + (1 - v / ymax) * plot_h

    parts = _open(w, h, title)
    parts.append(_text(_PAD, top - 12, y_label, fill=_MUTED, size=11))
    for tick, label in zip(ticks, tick_text, strict=True):
        parts.append(_line(x0, sy(tick), x0 + plot_w, sy(tick)))
        parts.append(_text(x0 - 4, sy(tick) + 4, label, anchor="end", fill=_MUTED))
    for i, value in enumerate(heights):
        tip = f"[{_compact(bounds[i])}, {_compact(bounds[i + 1])}): {value:,.0f}"
        if value > 0:
            gap = 1.0 if bin_w > 4 else 0.0
            parts.append(
                _rect(
                    x0 + i * bin_w + gap / 2,
                    sy(value),
                    bin_w - gap,
                    sy(0) - sy(value),
                    _BAR_COLOR,
                    tip,
                )
            )
    room = max(_text_width(t) for t in edge_text) + 8
    stride = max(1, math.ceil(room / bin_w))
    axis_y = top + plot_h
    for i in range(0, len(bounds), stride):
        x = x0 + i * bin_w
        parts.append(_line(x, axis_y, x, axis_y + 4, _MUTED))
        parts.append(_text(x, axis_y + 16, edge_text[i], anchor="middle", fill=_MUTED))
    parts.append(_line(x0, axis_y, x0 + plot_w, axis_y, _MUTED))
    parts.append(_text(x0 + plot_w / 2, h - 4, x_label, anchor="middle", fill=_MUTED))
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar_svg(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    width: int = 560,
    normalize: bool = True,
    max_series: int = 9,
) -> str:
    """One horizontal bar per category, split into segments, one per series.

    ``series`` maps a series name (e.g. a label) to one value per category (e.g. its
    rows in each split). With ``normalize`` (the default) every bar is scaled to 100% so
    shares can be compared between categories of different sizes; otherwise bars share
    one scale. The category total is written after each bar and a segment's share
    inside it when there is room. Series beyond ``max_series`` (the smallest by total)
    are merged into one grey "other" segment. Non-finite values count as 0.

    Raises:
        ValueError: a series has not one value per category, a value is negative, or
            ``max_series`` is below 1.
    """
    if max_series < 1:
        raise ValueError(f"stacked_bar_svg max_series must be >= 1, got {max_series}")
    rows: dict[str, list[float]] = {}
    for name, values in series.items():
        _check_same_length(f"stacked_bar_svg series {name!r} and categories", values, categories)
        clean = [v if math.isfinite(v) else 0.0 for v in (float(x) for x in values)]
        if any(v < 0 for v in clean):
            raise ValueError(f"stacked_bar_svg values must be >= 0, series {name!r} has {clean}")
        rows[_clean(name)] = clean
    totals = [sum(col) for col in zip(*rows.values(), strict=True)] if rows else []
    if not categories or not rows or max(totals, default=0.0) == 0:
        return _no_data(title, width)

    items = list(rows.items())
    if len(items) > max_series:
        keep = sorted(items, key=lambda kv: -sum(kv[1]))[:max_series]
        kept_names = {name for name, _ in keep}
        rest = [values for name, values in items if name not in kept_names]
        items = [kv for kv in items if kv[0] in kept_names]
        other = [sum(col) for col in zip(*rest, strict=True)]
        items.append((f"other ({len(rest)})", other))
    colors = [
        _OTHER_COLOR
        if i == len(items) - 1 and len(rows) > max_series
        else PALETTE[i % len(PALETTE)]
        for i in range(len(items))
    ]

    w = float(width)
    names = [_clean(c) for c in categories]
    total_text = [_plain(t) for t in totals]
    row_h, bar_h = 26.0, 18.0
    label_w = min(max(_text_width(n) for n in names), w * 0.3) + 8
    value_w = max(_text_width(t) for t in total_text) + 8
    x0 = _PAD + label_w
    plot_w = max(w - x0 - value_w - _PAD, 40.0)
    scale_max = max(totals)
    legend_top = _TITLE_H + len(names) * row_h + 6
    legend, legend_h = _legend(
        [(name, color) for (name, _), color in zip(items, colors, strict=True)],
        x0,
        legend_top,
        w - _PAD,
    )
    height = legend_top + legend_h + _PAD
    parts = _open(w, height, title)
    for i, name in enumerate(names):
        top = _TITLE_H + i * row_h
        baseline = top + row_h / 2 + 4
        shown = _fit(name, label_w - 8)
        parts.append(
            _text(x0 - 6, baseline, shown, anchor="end", tooltip=name if shown != name else None)
        )
        total = totals[i]
        full = plot_w if normalize else plot_w * total / scale_max
        parts.append(
            _rect(
                x0, top + (row_h - bar_h) / 2, plot_w if normalize else full, bar_h, "#f6f8fa", None
            )
        )
        x = x0
        for (series_name, values), color in zip(items, colors, strict=True):
            value = values[i]
            if value <= 0 or total <= 0:
                continue
            seg = full * value / total
            share = value / total
            tip = f"{name} · {series_name}: {_plain(value)} ({share:.1%})"
            parts.append(_rect(x, top + (row_h - bar_h) / 2, seg, bar_h, color, tip))
            inside = f"{share:.0%}"
            if _text_width(inside, 11) + 6 <= seg:
                parts.append(
                    _text(
                        x + seg / 2,
                        baseline - 0.5,
                        inside,
                        anchor="middle",
                        size=11,
                        fill=_text_color_on(color),
                    )
                )
            x += seg
        end = x0 + (plot_w if normalize else full)
        parts.append(_text(end + 4, baseline, total_text[i], fill=_MUTED))
    parts.extend(legend)
    parts.append("</svg>")
    return "".join(parts)


def line_chart_svg(
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 560,
    height: int = 260,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    dashed: Collection[str] = (),
) -> str:
    """One line per series over the shared ``xs``, with a legend when there are several.

    Points whose x or y is not finite (e.g. NaN for an empty bin) break the line rather
    than being joined. Axes span the data (rounded out to tidy ticks) unless
    ``x_range``/``y_range`` fix them, e.g. ``(0, 1)`` for a reliability plot, where the
    "perfect calibration" diagonal can be a series named in ``dashed``. Points get
    markers with hover values when there are at most 60 of them. Nothing finite to draw
    gives a "no data" note.

    Raises:
        ValueError: a series has not one value per x, or a range is empty.
    """
    for name, values in series.items():
        _check_same_length(f"line_chart_svg series {name!r} and xs", values, xs)
    for which, given in (("x_range", x_range), ("y_range", y_range)):
        if given is not None and not given[1] > given[0]:
            raise ValueError(
                f"line_chart_svg {which} must be (low, high) with low < high, got {given}"
            )
    x_vals = [_as_float(x) for x in xs]
    lines = {_clean(name): [_as_float(v) for v in values] for name, values in series.items()}
    points = {name: [(x, y) for x, y in zip(x_vals, ys, strict=True)] for name, ys in lines.items()}
    all_x = [x for pts in points.values() for x, y in pts if math.isfinite(x + y)]
    all_y = [y for pts in points.values() for x, y in pts if math.isfinite(x + y)]
    if not all_x:
        return _no_data(title, width)

    w, h = float(width), float(height)
    x_lo, x_hi = x_range if x_range is not None else (min(all_x), max(all_x))
    y_lo, y_hi = y_range if y_range is not None else (min(all_y), max(all_y))
    x_ticks = _nice_ticks(x_lo, x_hi, 6)
    y_ticks = _nice_ticks(y_lo, y_hi, 5)
    if x_range is None:
        x_lo, x_hi = x_ticks[0], x_ticks[-1]
    if y_range is None:
        y_lo, y_hi = y_ticks[0], y_ticks[-1]
    eps_x, eps_y = (x_hi - x_lo) * 1e-9, (y_hi - y_lo) * 1e-9
    x_ticks = [t for t in x_ticks if x_lo - eps_x <= t <= x_hi + eps_x]
    y_ticks = [t for t in y_ticks if y_lo - eps_y <= t <= y_hi + eps_y]
    x_text, y_text = _tick_labels(x_ticks), _tick_labels(y_ticks)

    names = list(points)
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    dashed_names = {_clean(d) for d in dashed}
    x0 = _PAD + max(_text_width(t) for t in y_text) + 6
    right = w - max(_PAD + 10, _text_width(x_text[-1]) / 2 + 4)
    legend: list[str] = []
    legend_h = 0.0
    if len(names) > 1:
        legend, legend_h = _legend([(n, colors[n]) for n in names], x0, _TITLE_H - 4, right)
    top = _TITLE_H + legend_h + 20
    bottom = 38.0
    plot_w = max(right - x0, 40.0)
    plot_h = max(h - top - bottom, 40.0)

    def sx(v: float) -> float:
        return x0 + (v - x_lo) / (x_hi - x_lo) * plot_w

    def sy(v: float) -> float:
        return top + (y_hi - v) / (y_hi - y_lo) * plot_h

    parts = _open(w, h, title)
    parts.extend(legend)
    parts.append(_text(_PAD, top - 12, y_label, fill=_MUTED, size=11))
    for tick, label in zip(y_ticks, y_text, strict=True):
        parts.append(_line(x0, sy(tick), x0 + plot_w, sy(tick)))
        parts.append(_text(x0 - 4, sy(tick) + 4, label, anchor="end", fill=_MUTED))
    axis_y = top + plot_h
    for tick, label in zip(x_ticks, x_text, strict=True):
        parts.append(_line(sx(tick), axis_y, sx(tick), axis_y + 4, _MUTED))
        parts.append(_text(sx(tick), axis_y + 16, label, anchor="middle", fill=_MUTED))
    parts.append(_line(x0, axis_y, x0 + plot_w, axis_y, _MUTED))
    parts.append(_line(x0, top, x0, axis_y, _MUTED))
    parts.append(_text(x0 + plot_w / 2, h - 4, x_label, anchor="middle", fill=_MUTED))

    n_points = sum(1 for pts in points.values() for x, y in pts if math.isfinite(x + y))
    for name in names:
        color = colors[name]
        dash = ' stroke-dasharray="5 4"' if name in dashed_names else ""
        run: list[tuple[float, float]] = []
        runs: list[list[tuple[float, float]]] = []
        for x, y in points[name]:
            if math.isfinite(x + y):
                run.append((x, y))
            elif run:
                runs.append(run)
                run = []
        if run:
            runs.append(run)
        for segment in runs:
            if len(segment) > 1:
                coords = " ".join(f"{_n(sx(x))},{_n(sy(y))}" for x, y in segment)
                parts.append(
                    f'<polyline points="{coords}" fill="none" stroke="{color}" '
                    f'stroke-width="2" stroke-linejoin="round"{dash}/>'
                )
        if n_points <= 60 and name not in dashed_names:
            for segment in runs:
                for x, y in segment:
                    tip = _esc(f"{name}: ({x:.4g}, {y:.4g})")
                    parts.append(
                        f'<circle cx="{_n(sx(x))}" cy="{_n(sy(y))}" r="3" '
                        f'fill="{color}"><title>{tip}</title></circle>'
                    )
    parts.append("</svg>")
    return "".join(parts)


def _mix(low: str, high: str, t: float) -> str:
    """The hex colour ``t`` of the way from ``low`` to ``high`` (``t`` clipped to [0, 1])."""
    t = min(max(t, 0.0), 1.0)
    channels = []
    for i in (1, 3, 5):
        a, b = int(low[i : i + 2], 16), int(high[i : i + 2], 16)
        channels.append(round(a + (b - a) * t))
    return "#" + "".join(f"{c:02x}" for c in channels)


def heatmap_svg(
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    value_format: str = "{:,.0f}",
    normalize: str = "all",
    highlight_diagonal: bool = False,
    width: int = 560,
) -> str:
    """A grid of cells, one per (row, column), shaded by value, e.g. a confusion matrix.

    ``values`` holds one row of non-negative numbers per row label, one per column
    label. A cell's shade is its value divided by the largest value (``normalize="all"``)
    or by its row total (``normalize="rows"``, e.g. the share of each true label's rows
    that went to each prediction). With ``highlight_diagonal`` cells off the diagonal
    are shaded red instead of blue, so that in a confusion matrix the mistakes stand
    out. Values are written inside cells that have room; every cell shows its row,
    column, value (and row share) on hover. Row labels sit on the left, column labels
    under the grid, rotated when they do not fit. Empty input, or values that are all
    zero or non-finite, give a "no data" note.

    Raises:
        ValueError: ``values`` is not one row per row label and one value per column
            label, a value is negative, or ``normalize`` is not "all" or "rows".
    """
    if normalize not in ("all", "rows"):
        raise ValueError(f"heatmap_svg normalize must be 'all' or 'rows', got {normalize!r}")
    _check_same_length("heatmap_svg rows of values and row_labels", values, row_labels)
    grid: list[list[float]] = []
    for i, row in enumerate(values):
        _check_same_length(f"heatmap_svg values row {i} and col_labels", row, col_labels)
        cells = [_as_float(v) for v in row]
        if any(v < 0 for v in cells):
            raise ValueError(f"heatmap_svg values must be >= 0, row {i} has {list(row)}")
        grid.append(cells)
    finite = [v for row in grid for v in row if math.isfinite(v)]
    if not row_labels or not col_labels or not finite or max(finite) == 0:
        return _no_data(title, width)

    w = float(width)
    rows = [_clean(label) for label in row_labels]
    cols = [_clean(label) for label in col_labels]
    y_axis_w = 18.0 if y_label else 0.0
    label_w = min(max(_text_width(r) for r in rows), w * 0.28) + 8
    x0 = _PAD + y_axis_w + label_w
    cell_w = min(max(w - x0 - _PAD, 40.0) / len(cols), 96.0)
    cell_h = min(max(cell_w * 0.6, 18.0), 40.0)
    plot_w = cell_w * len(cols)
    top = _TITLE_H + 6
    plot_h = cell_h * len(rows)

    longest = max(_text_width(c) for c in cols)
    rotate = longest > cell_w - 4
    steep = rotate and cell_w * 0.64 < 15
    angle = 90 if steep else 40
    stride = max(1, math.ceil(15 / cell_w)) if steep else 1
    max_label = 110.0 if rotate else cell_w - 4
    col_label_h = (min(longest, max_label) * (1.0 if steep else 0.65) + 18) if rotate else 20.0
    x_axis_h = 18.0 if x_label else 0.0
    height = top + plot_h + col_label_h + x_axis_h + _PAD

    row_totals = [sum(v for v in row if math.isfinite(v)) for row in grid]
    top_value = max(finite)
    font = 11.0 if cell_h < 24 else _FONT_SIZE
    parts = _open(w, height, title)
    for i, (name, row) in enumerate(zip(rows, grid, strict=True)):
        y = top + i * cell_h
        shown = _fit(name, label_w - 8)
        parts.append(
            _text(
                x0 - 6,
                y + cell_h / 2 + 4,
                shown,
                anchor="end",
                tooltip=name if shown != name else None,
            )
        )
        for j, value in enumerate(row):
            x = x0 + j * cell_w
            base = _ERROR_COLOR if highlight_diagonal and i != j else _BAR_COLOR
            denominator = row_totals[i] if normalize == "rows" else top_value
            share = value / denominator if math.isfinite(value) and denominator > 0 else 0.0
            fill = _mix(_EMPTY_CELL, base, 0.08 + 0.92 * share) if share > 0 else _EMPTY_CELL
            if not math.isfinite(value):
                fill = "#ffffff"
            shown_value = _format(value_format, value)
            tip = f"{name} → {cols[j]}: {shown_value}"
            if normalize == "rows" and math.isfinite(value) and row_totals[i] > 0:
                tip += f" ({value / row_totals[i]:.1%} of row)"
            parts.append(_rect(x + 0.5, y + 0.5, cell_w - 1, cell_h - 1, fill, tip))
            if cell_h >= 14 and _text_width(shown_value, font) + 4 <= cell_w:
                parts.append(
                    _text(
                        x + cell_w / 2,
                        y + cell_h / 2 + font / 3,
                        shown_value,
                        anchor="middle",
                        size=font,
                        fill=_text_color_on(fill) if value else _MUTED,
                    )
                )
    axis_y = top + plot_h
    for j, name in enumerate(cols):
        if j % stride:
            continue
        centre = x0 + (j + 0.5) * cell_w
        shown = _fit(name, max_label)
        tip = name if shown != name else None
        y_text = axis_y + (8 if steep else 14)
        if rotate:
            parts.append(
                _text(
                    centre + 4,
                    y_text,
                    shown,
                    anchor="end",
                    tooltip=tip,
                    transform=f"rotate(-{angle} {_n(centre + 4)} {_n(y_text)})",
                )
            )
        else:
            parts.append(_text(centre, y_text, shown, anchor="middle", tooltip=tip))
    if x_label:
        parts.append(
            _text(x0 + plot_w / 2, height - _PAD - 2, x_label, anchor="middle", fill=_MUTED)
        )
    if y_label:
        mid = top + plot_h / 2
        parts.append(
            _text(
                _PAD + 12,
                mid,
                y_label,
                anchor="middle",
                fill=_MUTED,
                transform=f"rotate(-90 {_n(_PAD + 12)} {_n(mid)})",
            )
        )
    parts.append("</svg>")
    return "".join(parts)
