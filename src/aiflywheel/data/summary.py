"""The data-quality summary printed by ``flywheel data check``."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiflywheel.tables import print_table

_LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def print_data_summary(report: dict, console: Console) -> None:
    rows = report["rows"]
    console.print(
        f"[bold]{report['feature']}[/bold] from {report['source']} "
        f"({report['input']['format']}, {report['input']['encoding'] or 'binary'}): "
        f"{rows['read']:,} rows read, {rows['kept']:,} kept, {rows['dropped']:,} dropped "
        f"in {report['seconds']:.1f} s; dataset {report['dataset_version'][:12]}"
    )
    drops = {reason: n for reason, n in report["drops"].items() if n}
    if drops:
        console.print("dropped: " + ", ".join(f"{reason} {n:,}" for reason, n in drops.items()))
    too_long = report.get("too_long") or {}
    if too_long.get("rows"):
        labels = [(k, v) for k, v in too_long["by_label"].items() if v["rows"]][:5]
        console.print(
            f"longer than {too_long['max_chars']:,} chars ({too_long['action']}): "
            f"{too_long['rows']:,} row{'' if too_long['rows'] == 1 else 's'} "
            f"({too_long['share']:.1%})"
            + (": " if labels else "")
            + ", ".join(f"{escape(k)} {v['rows']:,} ({v['share']:.1%})" for k, v in labels),
            highlight=False,
        )
    pii = report["pii"]
    hits = {t: n for t, n in pii["hits"].items() if n}
    console.print(
        f"PII ({pii['mode']}): {pii['rows_with_pii']} rows"
        + (": " + ", ".join(f"{t} {n}" for t, n in hits.items()) if hits else "")
    )
    labels = report["labels"]
    table = Table("label", "rows", "share", "train", "val", "test", title="labels and splits")
    parts = report["splits"]["parts"]
    total = sum(labels["counts"].values()) or 1
    for label, count in list(labels["counts"].items())[:30]:
        table.add_row(
            escape(label),
            f"{count:,}",
            f"{count / total:.1%}",
            *(f"{parts[name]['labels'].get(label, 0):,}" for name in ("train", "val", "test")),
        )
    print_table(console, table)
    console.print(f"imbalance ratio {labels['imbalance_ratio']}  ·  {labels['n_labels']} labels")
    lengths = report["lengths"]
    if lengths:
        console.print(
            "length (chars): "
            + "  ".join(
                f"{key} {lengths[key]}" for key in ("min", "p5", "p50", "p95", "p99", "max")
            )
        )
    langs = report["languages"]
    console.print("languages: " + ", ".join(f"{k} {v:,}" for k, v in langs.items()))
    leakage = report["splits"]["leakage"]
    style = "green" if not any(leakage.values()) else "bold red"
    console.print(
        f"leakage check: [{style}]test∩train {leakage['test_in_train']}, "
        f"val∩train {leakage['val_in_train']}, groups shared {leakage['groups_shared']}[/{style}]"
    )
    for warning in report["warnings"]:
        level = warning["level"]
        console.print(
            f"[{_LEVEL_STYLE[level]}]{level}:[/] {escape(warning['message'])}", highlight=False
        )
    if not report["warnings"]:
        console.print("[green]no problems found[/green]")
