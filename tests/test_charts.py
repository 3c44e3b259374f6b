"""Inline-SVG charts: well-formed, escaped, and safe on empty or degenerate input."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from aiflywheel.reports.charts import (
    bar_chart_svg,
    heatmap_svg,
    histogram_svg,
    line_chart_svg,
    stacked_bar_svg,
)

NASTY = '<script>alert("x")</script> & 好评'


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "svg"
    assert root.get("viewBox")
    assert root.get("role") == "img"
    return root


def _texts(root: ET.Element) -> list[str]:
    return ["".join(el.itertext()) for el in root.iter("text")]


def _titles(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter("title")]


def _is_no_data(root: ET.Element) -> bool:
    return "no data" in _texts(root)


@pytest.mark.parametrize("horizontal", [True, False])
def test_bar_chart_escapes_labels_and_shows_values(horizontal: bool) -> None:
    svg = bar_chart_svg(
        [NASTY, "正面", "negative"],
        [1200, 30, 4],
        title="Rows <per> label & more",
        horizontal=horizontal,
    )
    assert "<script>" not in svg
    root = _parse(svg)
    assert _titles(root)[0] == "Rows <per> label & more"
    assert f"{NASTY}: 1,200" in _titles(root)
    texts = _texts(root)
    assert "正面" in texts
    assert len(list(root.iter("rect"))) == 3


def test_bar_chart_value_format_and_negative_values() -> None:
    root = _parse(bar_chart_svg(["a", "b"], [0.25, -0.5], title="t", value_format="{:.0%}"))
    assert {"25%", "-50%"} <= set(_texts(root))
    rects = list(root.iter("rect"))
    assert all(float(r.get("width", "0")) > 0 for r in rects)


def test_bar_chart_long_label_is_shortened_but_kept_on_hover() -> None:
    label = "一个非常非常非常非常非常非常非常非常非常非常非常非常长的标签" * 2
    root = _parse(bar_chart_svg([label, "b"], [5, 3], title="t", width=400))
    assert label not in _texts(root)
    assert any(t.endswith("…") for t in _texts(root))
    assert label in _titles(root)


@pytest.mark.parametrize(
    ("labels", "values"),
    [([], []), (["a", "b"], [0, 0]), (["a"], [math.nan]), (["a"], [math.inf])],
)
def test_bar_chart_without_data_says_so(labels: list[str], values: list[float]) -> None:
    for horizontal in (True, False):
        root = _parse(bar_chart_svg(labels, values, title="empty", horizontal=horizontal))
        assert _is_no_data(root)


def test_bar_chart_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        bar_chart_svg(["a", "b"], [1], title="t")


def test_vertical_bar_chart_with_many_labels_stays_well_formed() -> None:
    labels = [f"类别{i}" for i in range(60)]
    root = _parse(bar_chart_svg(labels, list(range(60, 0, -1)), title="t", horizontal=False))
    assert len(list(root.iter("rect"))) == 60
    assert any(el.get("transform", "").startswith("rotate(") for el in root.iter("text"))


def test_control_characters_do_not_break_xml() -> None:
    root = _parse(bar_chart_svg(["a\x00b\x1fc", "line\nbreak"], [1, 2], title="t\x0b"))
    assert "line break" in _texts(root)


def test_histogram_draws_one_bar_per_nonzero_bin_with_edge_labels() -> None:
    root = _parse(
        histogram_svg([0, 10, 20, 50, 100], [5, 0, 7, 1], title="Length", x_label="chars")
    )
    assert len(list(root.iter("rect"))) == 3
    texts = _texts(root)
    assert {"0", "10", "100", "chars"} <= set(texts)
    assert "[20, 50): 7" in _titles(root)


def test_histogram_counts_get_whole_number_ticks() -> None:
    root = _parse(histogram_svg([0, 1, 2], [3, 10], title="h", x_label="x"))
    assert not any("." in t for t in _texts(root) if t[:1].isdigit())


@pytest.mark.parametrize(("edges", "counts"), [([], []), ([0.0], []), ([0, 1, 2], [0, 0])])
def test_histogram_without_data_says_so(edges: list[float], counts: list[int]) -> None:
    assert _is_no_data(_parse(histogram_svg(edges, counts, title="h", x_label="x")))


def test_histogram_rejects_bad_edges() -> None:
    with pytest.raises(ValueError, match=r"len\(edges\) == len\(counts\) \+ 1"):
        histogram_svg([0, 1], [1, 2], title="h", x_label="x")
    with pytest.raises(ValueError, match="strictly increasing"):
        histogram_svg([0, 2, 1], [1, 2], title="h", x_label="x")


def test_stacked_bar_shows_shares_per_category() -> None:
    svg = stacked_bar_svg(
        ["train", "val", "test"],
        {"positive": [60, 6, 0], NASTY: [40, 4, 0]},
        title="Label share per split",
    )
    assert "<script>" not in svg
    root = _parse(svg)
    texts = _texts(root)
    assert {"train", "60%", "40%", "100", NASTY} <= set(texts)
    assert "train · positive: 60 (60.0%)" in _titles(root)


def test_stacked_bar_merges_small_series_into_other() -> None:
    series = {f"label{i}": [100 - i, 10] for i in range(15)}
    root = _parse(stacked_bar_svg(["train", "test"], series, title="t", max_series=4))
    texts = _texts(root)
    assert "other (11)" in texts
    assert "label14" not in texts
    assert "label0" in texts


@pytest.mark.parametrize(
    ("categories", "series"),
    [([], {}), (["train"], {}), (["train", "val"], {"a": [0, 0]}), ([], {"a": []})],
)
def test_stacked_bar_without_data_says_so(
    categories: list[str], series: dict[str, list[float]]
) -> None:
    assert _is_no_data(_parse(stacked_bar_svg(categories, series, title="t")))


def test_stacked_bar_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        stacked_bar_svg(["a", "b"], {"x": [1]}, title="t")
    with pytest.raises(ValueError, match=">= 0"):
        stacked_bar_svg(["a"], {"x": [-1]}, title="t")


def test_line_chart_breaks_lines_at_missing_points() -> None:
    xs = [0.05, 0.15, 0.25, 0.35, 0.45]
    root = _parse(
        line_chart_svg(
            xs,
            {"model": [0.1, 0.2, math.nan, 0.3, 0.5], "perfect": xs},
            title="Reliability",
            x_label="confidence",
            y_label="accuracy",
            x_range=(0, 1),
            y_range=(0, 1),
            dashed=["perfect"],
        )
    )
    polylines = list(root.iter("polyline"))
    assert len(polylines) == 3  # model split in two at the NaN, plus the diagonal
    assert sum(1 for p in polylines if p.get("stroke-dasharray")) == 1
    assert len(list(root.iter("circle"))) == 4
    texts = _texts(root)
    assert {"model", "perfect", "confidence", "accuracy", "0.0", "1.0"} <= set(texts)


def test_line_chart_constant_series_does_not_divide_by_zero() -> None:
    root = _parse(line_chart_svg([1, 2, 3], {"a": [5, 5, 5]}, title="t", x_label="x", y_label="y"))
    assert len(list(root.iter("polyline"))) == 1


@pytest.mark.parametrize(
    ("xs", "series"), [([], {}), ([1, 2], {"a": [math.nan, math.nan]}), ([1], {})]
)
def test_line_chart_without_data_says_so(xs: list[float], series: dict[str, list[float]]) -> None:
    assert _is_no_data(_parse(line_chart_svg(xs, series, title="t", x_label="x", y_label="y")))


def test_line_chart_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        line_chart_svg([1, 2], {"a": [1]}, title="t", x_label="x", y_label="y")
    with pytest.raises(ValueError, match="low < high"):
        line_chart_svg([1], {"a": [1]}, title="t", x_label="x", y_label="y", x_range=(1, 1))


def test_charts_reference_nothing_outside_themselves() -> None:
    svgs = [
        bar_chart_svg(["a"], [1], title="t"),
        histogram_svg([0, 1], [1], title="t", x_label="x"),
        stacked_bar_svg(["a"], {"x": [1]}, title="t"),
        line_chart_svg([0, 1], {"a": [0, 1]}, title="t", x_label="x", y_label="y"),
        heatmap_svg(["a"], ["b"], [[1]], title="t"),
    ]
    for svg in svgs:
        assert "http" not in svg
        assert "href" not in svg
        assert "<script" not in svg


def _cells(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter("rect") if r.find("title") is not None]


def test_heatmap_draws_one_cell_per_value_with_counts_and_escaped_labels() -> None:
    svg = heatmap_svg(
        [NASTY, "退款"],
        [NASTY, "退款"],
        [[50, 3], [0, 47]],
        title="Confusion <matrix>",
        x_label="predicted",
        y_label="true",
        normalize="rows",
        highlight_diagonal=True,
    )
    assert "<script>" not in svg
    root = _parse(svg)
    cells = _cells(root)
    assert len(cells) == 4
    texts = _texts(root)
    assert {"50", "3", "0", "47", "predicted", "true", "退款"} <= set(texts)
    assert f"{NASTY} → 退款: 3 (5.7% of row)" in _titles(root)
    fills = [c.get("fill") for c in cells]
    assert fills[0] != fills[1]  # the diagonal is blue, the mistake red
    assert fills[2] == "#f6f8fa"  # an empty cell stays blank


def test_heatmap_shades_by_row_share_when_asked() -> None:
    root = _parse(heatmap_svg(["a", "b"], ["a", "b"], [[90, 10], [1, 9]], title="t"))
    by_all = [c.get("fill") for c in _cells(root)]
    root = _parse(
        heatmap_svg(["a", "b"], ["a", "b"], [[90, 10], [1, 9]], title="t", normalize="rows")
    )
    by_rows = [c.get("fill") for c in _cells(root)]
    assert by_all[0] == "#4e79a7"  # the largest value gets the full colour
    assert by_rows[3] < by_all[3]  # 9 is 10% of the largest value but 90% of its row: darker


def test_heatmap_with_many_labels_rotates_them_and_drops_cell_text() -> None:
    labels = [f"类别{i}" for i in range(40)]
    values = [[100 if i == j else 1 for j in range(40)] for i in range(40)]
    root = _parse(heatmap_svg(labels, labels, values, title="t", width=600))
    assert len(_cells(root)) == 1600
    assert any(el.get("transform", "").startswith("rotate(") for el in root.iter("text"))
    assert "100" not in _texts(root)  # cells too small for their numbers


@pytest.mark.parametrize(
    ("rows", "cols", "values"),
    [([], [], []), (["a"], [], [[]]), (["a"], ["b"], [[0]]), (["a"], ["b"], [[math.nan]])],
)
def test_heatmap_without_data_says_so(
    rows: list[str], cols: list[str], values: list[list[float]]
) -> None:
    assert _is_no_data(_parse(heatmap_svg(rows, cols, values, title="t")))


def test_heatmap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        heatmap_svg(["a", "b"], ["x"], [[1]], title="t")
    with pytest.raises(ValueError, match="lengths differ"):
        heatmap_svg(["a"], ["x", "y"], [[1]], title="t")
    with pytest.raises(ValueError, match=">= 0"):
        heatmap_svg(["a"], ["x"], [[-1]], title="t")
    with pytest.raises(ValueError, match="normalize"):
        heatmap_svg(["a"], ["x"], [[1]], title="t", normalize="cols")
