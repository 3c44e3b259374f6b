"""The data-quality report: figures a product manager reads, and warnings to act on."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone

import numpy as np

from aiflywheel.data.clean import DROP_REASONS, CleanResult
from aiflywheel.data.dataset import Dataset
from aiflywheel.data.ingest import IngestResult
from aiflywheel.data.language import language_mix
from aiflywheel.data.split import SPLITS, SplitResult
from aiflywheel.recipe import Recipe

_PERCENTILES = (5, 25, 50, 75, 95, 99)


def length_stats(texts: list[str], bins: int = 20) -> dict:
    """Character-length percentiles and a histogram (empty dict for no texts)."""
    if not texts:
        return {}
    lengths = np.array([len(t) for t in texts])
    stats: dict = {"unit": "chars", "min": int(lengths.min())}
    for p in _PERCENTILES:
        stats[f"p{p}"] = int(np.percentile(lengths, p))
    stats["max"] = int(lengths.max())
    stats["mean"] = round(float(lengths.mean()), 1)
    upper = max(int(np.percentile(lengths, 99)), 1)
    counts, edges = np.histogram(np.minimum(lengths, upper), bins=bins, range=(0, upper))
    stats["histogram"] = {"edges": [round(float(e), 1) for e in edges], "counts": counts.tolist()}
    return stats


def label_stats(dataset: Dataset) -> dict:
    counts = Counter(r.label for r in dataset if r.label is not None)
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    ratio = round(max(counts.values()) / min(counts.values()), 2) if counts else None
    return {"counts": ordered, "n_labels": len(counts), "imbalance_ratio": ratio}


def too_long_stats(cleaned: CleanResult, recipe: Recipe) -> dict:
    """Rows longer than ``clean.max_chars`` (truncated or dropped), overall and per label,
    each with its share of the rows that reached cleaning (of that label)."""
    total = sum(cleaned.rows_by_label.values())
    affected = sum(cleaned.too_long_by_label.values())
    by_label = {
        str(label): {
            "rows": int(cleaned.too_long_by_label.get(label, 0)),
            "of_rows": int(rows),
            "share": round(cleaned.too_long_by_label.get(label, 0) / rows, 4),
        }
        for label, rows in cleaned.rows_by_label.items()
        if label is not None
    }
    ordered = sorted(by_label.items(), key=lambda kv: (-kv[1]["rows"], -kv[1]["share"], kv[0]))
    return {
        "max_chars": recipe.clean.max_chars,
        "action": recipe.clean.too_long,
        "rows": affected,
        "of_rows": total,
        "share": round(affected / total, 4) if total else 0.0,
        "by_label": dict(ordered),
    }


def build_data_report(
    recipe: Recipe,
    ingested: IngestResult,
    cleaned: CleanResult,
    split: SplitResult,
    *,
    dataset_version: str,
    seconds: float,
) -> dict:
    """Everything ``flywheel data check`` prints and writes, as one JSON-able dict."""
    dataset = cleaned.dataset
    drops = Counter(ingested.drops) + Counter(cleaned.drops)
    drops["malformed"] = len(ingested.malformed)
    drop_counts = {reason: int(drops.get(reason, 0)) for reason in DROP_REASONS}
    report = {
        "feature": recipe.feature,
        "task": recipe.task,
        "source": recipe.data.source,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset_version": dataset_version,
        "seconds": round(seconds, 2),
        "input": {
            "format": ingested.format,
            "encoding": ingested.encoding,
            "notes": ingested.notes,
            "malformed_lines": [list(item) for item in ingested.malformed[:50]],
            "malformed_total": len(ingested.malformed),
        },
        "rows": {
            "read": ingested.rows_read,
            "kept": len(dataset),
            "dropped": sum(drop_counts.values()),
        },
        "drops": drop_counts,
        "duplicates": {
            "exact": drop_counts["duplicate"],
            "near": drop_counts["near_duplicate"],
            "conflicting_label_groups": cleaned.conflicting_label_groups,
            "conflict_policy": recipe.clean.conflicting_labels,
            "similar_with_other_label": cleaned.similar_with_other_label,
            "examples": cleaned.duplicate_examples,
        },
        "cleaning": {
            key: int(cleaned.changes.get(key, 0))
            for key in (
                "unicode_normalized",
                "html_stripped",
                "control_chars_removed",
                "whitespace_collapsed",
                "truncated",
            )
        },
        "too_long": too_long_stats(cleaned, recipe),
        "pii": {
            "mode": recipe.pii.mode,
            "types": list(recipe.pii.types),
            "rows_with_pii": cleaned.rows_with_pii,
            "hits": {t: int(cleaned.pii_hits.get(t, 0)) for t in recipe.pii.types},
        },
        "labels": label_stats(dataset),
        "lengths": length_stats(dataset.texts),
        "languages": language_mix(dataset.texts),
        "splits": {
            "fractions": {
                "train": recipe.split.train,
                "val": recipe.split.val,
                "test": recipe.split.test,
            }
            if not recipe.split.column
            else {
                name: round(len(split.parts[name]) / max(1, len(dataset)), 4)
                for name in ("train", "val", "test")
            },
            "column": recipe.split.column,
            "seed": recipe.seed,
            "stratified": recipe.split.stratify,
            "group_by": recipe.split.group_by,
            "parts": {
                name: {
                    "rows": len(split.parts[name]),
                    "labels": label_stats(split.parts[name])["counts"],
                    "groups": None if split.groups is None else split.groups[name],
                }
                for name in SPLITS
            },
            "leakage": split.leakage,
            "k_folds": recipe.split.k_folds,
            "split_version": split.version,
        },
    }
    report["warnings"] = data_warnings(report, recipe)
    return report


def data_warnings(report: dict, recipe: Recipe) -> list[dict]:
    """Warnings a product manager can act on, most severe first."""
    warnings: list[dict] = []

    def add(level: str, code: str, message: str) -> None:
        warnings.append({"level": level, "code": code, "message": message})

    rows = report["rows"]
    drops = report["drops"]
    minimum = recipe.report.min_examples_per_label
    counts = report["labels"]["counts"]
    for label, count in sorted(counts.items(), key=lambda kv: kv[1]):
        if count < minimum:
            add(
                "warning",
                "few_examples",
                f"label {label!r} has {count} examples: expect low recall; collect ≥ {minimum}",
            )
    ratio = report["labels"]["imbalance_ratio"]
    if ratio and ratio > recipe.report.max_imbalance_ratio:
        most, least = next(iter(counts)), list(counts)[-1]
        add(
            "warning",
            "imbalance",
            f"labels are imbalanced {ratio:g}:1 ({most!r} {counts[most]}, {least!r} "
            f"{counts[least]}): training uses class weights; watch recall on {least!r}",
        )
    if report["input"]["malformed_total"]:
        lines = ", ".join(str(item[0]) for item in report["input"]["malformed_lines"][:10])
        add(
            "warning",
            "malformed_lines",
            f"{report['input']['malformed_total']} lines could not be parsed (lines {lines}): "
            "fix them in the source or re-export the file",
        )
    notes = report["input"]["notes"]
    if any("mixed encodings" in note for note in notes):
        add("warning", "mixed_encoding", "the file mixes text encodings; re-export it as UTF-8")
    if any("best guess" in note for note in notes):
        add(
            "warning",
            "encoding_guessed",
            f"the encoding was guessed ({report['input']['encoding']}): check a few texts in "
            "the report, or set data.encoding",
        )
    if drops["missing_label"]:
        add(
            "warning",
            "missing_labels",
            f"{drops['missing_label']} rows had no label and were dropped: label them to use them",
        )
    too_long = report["too_long"]
    if too_long["rows"]:
        add("warning", f"too_long_{too_long['action']}", _too_long_message(too_long))
    duplicates = drops["duplicate"] + drops["near_duplicate"]
    if rows["read"] and duplicates / rows["read"] > 0.2:
        add(
            "warning",
            "many_duplicates",
            f"{duplicates / rows['read']:.0%} of rows were duplicates ({duplicates} of "
            f"{rows['read']}): check the export for repeated rows",
        )
    groups = report["duplicates"]["conflicting_label_groups"]
    if groups:
        policy = report["duplicates"]["conflict_policy"]
        outcome = {
            "drop": "dropped",
            "majority": "resolved by majority",
            "keep": "kept as they are",
        }
        add(
            "warning",
            "conflicting_labels",
            f"{groups} texts carried conflicting labels and were {outcome[policy]} "
            f"(clean.conflicting_labels: {policy}): review the labeling guideline",
        )
    pii = report["pii"]
    if pii["mode"] == "off":
        add("warning", "pii_off", "PII detection is off: personal data may reach the model")
    elif pii["rows_with_pii"]:
        hits = ", ".join(f"{n} {t}" for t, n in pii["hits"].items() if n)
        done = {"redact": "redacted", "mask": "masked", "drop_row": "dropped"}[pii["mode"]]
        add("info", "pii_found", f"PII found in {pii['rows_with_pii']} rows ({hits}) and {done}")
    if rows["kept"] < 200:
        add(
            "warning",
            "few_rows",
            f"only {rows['kept']} rows remain after cleaning: collect at least a few hundred",
        )
    test_rows = report["splits"]["parts"]["test"]["rows"]
    if 0 < test_rows < 200:
        margin = 1.96 * math.sqrt(0.25 / test_rows)
        add(
            "warning",
            "small_test_set",
            f"the test split has {test_rows} rows: accuracy will be uncertain by about "
            f"±{margin:.0%}; more data narrows it",
        )
    leakage = report["splits"]["leakage"]
    leaked = sum(leakage.values())
    if leaked:
        add(
            "error", "leakage", f"{leaked} texts or groups appear in more than one split: {leakage}"
        )
    lengths = report["lengths"]
    if lengths and lengths["p95"] > 512:
        add(
            "info",
            "long_texts",
            f"5% of texts are longer than {lengths['p95']} characters: models truncate long "
            "inputs, so put the important part first",
        )
    langs = report["languages"]
    total = sum(langs.values())
    if total and langs["zh"] and langs["en"] and min(langs["zh"], langs["en"]) / total >= 0.1:
        add(
            "info",
            "bilingual",
            f"the data mixes Chinese ({langs['zh'] / total:.0%}) and English "
            f"({langs['en'] / total:.0%}): use a multilingual model such as e5-small",
        )
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(warnings, key=lambda w: order[w["level"]])


def _too_long_message(too_long: dict) -> str:
    """The warning for rows over ``clean.max_chars``, naming the most affected labels."""
    action = too_long["action"]
    worst = [(label, v) for label, v in too_long["by_label"].items() if v["rows"]]
    worst.sort(key=lambda kv: (-kv[1]["share"], kv[0]))
    shown = ", ".join(
        f"{label!r} {v['rows']} ({v['share']:.1%} of its rows)" for label, v in worst[:3]
    )
    more = f" and {len(worst) - 3} more labels" if len(worst) > 3 else ""
    by_label = f"; by label: {shown}{more}" if shown else ""
    outcome = (
        "truncated to that length (the rest of each text is not used)"
        if action == "truncate"
        else "dropped"
    )
    advice = (
        "raise clean.max_chars to keep more of each text"
        if action == "truncate"
        else "set clean.too_long: truncate or raise clean.max_chars to keep them"
    )
    n = too_long["rows"]
    rows, were = (f"{n} row", "was") if n == 1 else (f"{n} rows", "were")
    return (
        f"{rows} ({too_long['share']:.1%}) {were} longer than clean.max_chars "
        f"({too_long['max_chars']} characters) and {were} {outcome}{by_label}: {advice}"
    )
