"""The image task's HTML reports (one self-contained file each, images inline)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.files import write_text_atomic
from aiflywheel.reports.charts import bar_chart_svg, heatmap_svg, line_chart_svg
from aiflywheel.tasks.image_classification.dataset import ImageSet
from aiflywheel.tasks.image_classification.evaluate import data_uri, overlay_png
from aiflywheel.tasks.image_classification.images import png_bytes

STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;font-size:14px}h1{font-size:1.5em}.sheet img{image-rendering:pixelated}
.mist{display:inline-block;margin:4px;text-align:center;font-size:12px}
.mist img{image-rendering:pixelated}"""


def _page(title: str, body: list[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def contact_sheet(pixels: np.ndarray, per_row: int = 12, scale: int = 2) -> bytes:
    """Up to ``per_row`` images side by side, as one PNG."""
    tiles = list(pixels[:per_row])
    if not tiles:
        return b""
    strip = np.concatenate(tiles, axis=1)
    strip = np.kron(strip, np.ones((scale, scale, 1), np.uint8))
    return png_bytes(strip)


def write_data_report(report: dict[str, Any], parts: dict[str, ImageSet], path: Path) -> None:
    rows = report["rows"]
    body = [
        f"<p>{rows['read']:,} images read from {html.escape(report['source'])}; "
        f"{rows['kept']:,} kept, {rows['dropped']:,} dropped, "
        f"{rows['exact_duplicates_removed']:,} exact duplicates removed. Input: "
        f"{html.escape(report['sizes']['input'])}.</p>",
        "<h2>Class balance</h2>",
        bar_chart_svg(
            list(report["labels"]["counts"]),
            list(report["labels"]["counts"].values()),
            title="images per label",
        ),
        _table(
            ["split", "images", "labels"],
            [
                [n, s["rows"], ", ".join(f"{k} {v}" for k, v in s["labels"].items())]
                for n, s in report["splits"].items()
            ],
        ),
        "<h2>Sizes</h2>",
        _table(
            ["", "min", "median", "max"],
            [[k, *report["sizes"][k].values()] for k in ("width", "height") if report["sizes"][k]],
        ),
        f"<p>formats: {html.escape(str(report['sizes']['formats']))}</p>",
        "<h2>Duplicates and leakage</h2>",
        f"<p>exact duplicates across splits (by pixel hash): "
        f"{html.escape(str(report['leakage']['exact']))}; perceptual-hash near duplicates "
        f"(≤ {report['near_duplicates']['bits']} bits): "
        f"{report['near_duplicates']['within_train_pairs']:,} pairs within train, across "
        f"splits {html.escape(str(report['near_duplicates']['across_splits_pairs']))}.</p>",
        "<h2>Dropped images</h2>",
        _table(["kind", "count"], [[k, v] for k, v in report["drops_by_kind"].items()])
        if report["drops"]
        else "<p>none</p>",
        "<ul>"
        + "".join(
            f"<li>{html.escape(d['origin'])}: {html.escape(d['reason'])}</li>"
            for d in report["drops"][:500]
        )
        + "</ul>",
        "<h2>Contact sheet (training images per label)</h2><div class='sheet'>",
    ]
    train = parts["train"]
    for label in sorted(set(train.labels)):
        index = [i for i, v in enumerate(train.labels) if v == label][:12]
        sheet = contact_sheet(train.pixels[index])
        body.append(
            f"<p><b>{html.escape(label)}</b><br><img alt='{html.escape(label)}' "
            f"src='{data_uri(sheet)}'></p>"
        )
    body.append("</div>")
    write_text_atomic(path, _page("Image data report", body))


def write_report(metrics: dict[str, Any], path: Path, *, title: str) -> None:
    model, baseline = metrics["model"], metrics["baseline"]
    labels = metrics["labels"]
    m, b = model["metrics"], baseline["metrics"]
    lo, hi = model["macro_f1_ci"]
    blo, bhi = baseline["macro_f1_ci"]
    body = [
        f"<p><b>{html.escape(metrics['verdict'])}</b></p>",
        _table(
            ["", "macro-F1", "95% CI", "accuracy", "ECE", "train s"],
            [
                [
                    model["name"],
                    f"{m['macro_f1']:.3f}",
                    f"{lo:.3f}–{hi:.3f}",
                    f"{m['accuracy']:.3f}",
                    f"{(m['calibration'] or {}).get('ece', 0):.3f}",
                    model["train_seconds"],
                ],
                [
                    baseline["name"],
                    f"{b['macro_f1']:.3f}",
                    f"{blo:.3f}–{bhi:.3f}",
                    f"{b['accuracy']:.3f}",
                    f"{(b['calibration'] or {}).get('ece', 0):.3f}",
                    baseline["train_seconds"],
                ],
            ],
        ),
        f"<p>{metrics['test_rows']:,} frozen test images. Gain of the model: "
        f"{100 * metrics['comparison']['diff']:+.2f} points (95% CI "
        f"{100 * metrics['comparison']['ci'][0]:+.2f} to "
        f"{100 * metrics['comparison']['ci'][1]:+.2f}).</p>",
        heatmap_svg(
            labels,
            labels,
            m["confusion"]["matrix"],
            title="confusion (rows: true label)",
            x_label="predicted",
            y_label="true",
            highlight_diagonal=True,
        ),
    ]
    bins = [x for x in (m["calibration"] or {}).get("bins", []) if x.get("count")]
    if bins:
        body.append(
            line_chart_svg(
                [x["confidence"] for x in bins],
                {
                    "accuracy": [x["accuracy"] for x in bins],
                    "perfect": [x["confidence"] for x in bins],
                },
                title="calibration",
                x_label="confidence",
                y_label="accuracy",
                x_range=(0, 1),
                y_range=(0, 1),
                dashed=("perfect",),
            )
        )
    body.append("<h2>Slices</h2>")
    for column, result in model["slices"].items():
        body.append(
            _table(
                [column, "images", "macro-F1"],
                [[v, s["n"], f"{s['macro_f1']:.3f}"] for v, s in result["values"].items()],
            )
        )
    if metrics.get("gan"):
        gan = metrics["gan"]
        body += [
            "<h2>GAN augmentation</h2>",
            f"<p>{gan['per_class']} generated images per class in {gan['seconds']:.0f} s; "
            f"feature distance to real training images {gan['frechet_distance']:.3f} "
            f"({html.escape(gan['distance_features'])}).</p>",
            f"<p class='sheet'><img alt='generated samples' src='{gan['grid']}'></p>",
            f"<p>Gate, GAN-augmented candidate vs the plain one on the real test split: "
            f"<b>{html.escape(gan['gate']['reason'])}</b> (registered: {gan['registered']}; "
            f"macro-F1 plain {gan['gate']['champion']['test']:.3f}, with GAN "
            f"{gan['gate']['candidate']['test']:.3f}).</p>",
        ]
    body.append("<h2>Most confident mistakes (occlusion saliency in red)</h2>")
    for item in metrics["mistakes"]:
        body.append(
            f"<div class='mist'><img src='{item['image']}'><img src='{item['saliency']}'><br>"
            f"{html.escape(item['true'])} → {html.escape(item['predicted'])} "
            f"({item['confidence']:.2f})</div>"
        )
    if not metrics["mistakes"]:
        body.append("<p>none</p>")
    write_text_atomic(path, _page(title, body))


__all__ = ["contact_sheet", "overlay_png", "write_data_report", "write_report"]
