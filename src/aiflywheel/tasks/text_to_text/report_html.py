"""The text_to_text evaluation report: each test set's systems with chrF/BLEU and CIs,
the verdict, sample outputs and the model's worst outputs (one self-contained HTML file)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from aiflywheel.files import write_text_atomic

NAMES = {"test": "Frozen test split", "extra_test": "Second test set (test_source)"}


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(metrics: dict[str, Any], path: Path, *, title: str) -> None:
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Direction {escape(metrics['direction'])}; {metrics['train_rows']:,} training "
        f"pairs; trained in {metrics['train_seconds']:.1f} s ({len(metrics['epochs'])} epochs); "
        f"tokens: {escape(str(metrics['tokens']))}.</p>",
    ]
    for key, name in NAMES.items():
        result = metrics.get(key)
        if not result:
            continue
        rows = [
            {
                "system": system,
                "chrF": f"{s['chrF']['score']:.2f} [{s['chrF']['ci'][0]:.2f}, "
                f"{s['chrF']['ci'][1]:.2f}]",
                "BLEU": f"{s['BLEU']['score']:.2f} [{s['BLEU']['ci'][0]:.2f}, "
                f"{s['BLEU']['ci'][1]:.2f}]",
            }
            for system, s in result["systems"].items()
        ]
        parts += [
            f"<h2>{escape(name)} ({result['rows']:,} pairs)</h2>",
            f"<p><b>{escape(result['verdict'])}</b></p>",
            _table(rows, ["system", "chrF", "BLEU"]),
            "<h3>Examples</h3>",
            _table(result["examples"], list(result["examples"][0]) if result["examples"] else []),
            "<h3>Worst model outputs (sentence chrF)</h3>",
            _table(result["worst"], ["source", "reference", "model", "chrF"]),
        ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
        "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    )
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    write_text_atomic(path, html)
