"""Clean: normalize text, drop unusable rows, redact PII, remove duplicates and label conflicts.

Every dropped row is counted under one reason (``DROP_REASONS``) so a report can say
where each row went. Rows longer than ``clean.max_chars`` are truncated (counted as the
``truncated`` change) or dropped (``too_long``) as ``clean.too_long`` says; either way
``CleanResult.too_long_by_label`` counts them per label.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aiflywheel.data.dataset import Dataset, Record
from aiflywheel.data.disjoint_sets import DisjointSets
from aiflywheel.data.near_duplicates import near_duplicate_pairs
from aiflywheel.data.pii import PLACEHOLDERS, scrub
from aiflywheel.data.text_normalize import (
    collapse_whitespace,
    near_duplicate_key,
    remove_control_chars,
    strip_html,
)
from aiflywheel.recipe import CleanConfig, PiiConfig

DROP_REASONS = (
    "malformed",
    "empty",
    "missing_label",
    "too_short",
    "too_long",
    "pii",
    "duplicate",
    "near_duplicate",
    "conflicting_label",
)
_MAX_EXAMPLES = 10


@dataclass
class CleanResult:
    """The cleaned dataset and an account of every change and drop."""

    dataset: Dataset
    drops: Counter = field(default_factory=Counter)
    dropped_ids: dict[str, str] = field(default_factory=dict)
    changes: Counter = field(default_factory=Counter)
    pii_hits: Counter = field(default_factory=Counter)
    rows_with_pii: int = 0
    conflicting_label_groups: int = 0
    similar_with_other_label: int = 0
    duplicate_examples: list[dict] = field(default_factory=list)
    rows_by_label: Counter = field(default_factory=Counter)
    too_long_by_label: Counter = field(default_factory=Counter)


def clean_text(text: str, config: CleanConfig, changes: Counter | None = None) -> str:
    """Normalize one text as the recipe says; count what changed in ``changes``."""
    changes = changes if changes is not None else Counter()
    if config.unicode_nfkc:
        normalized = unicodedata.normalize("NFKC", text)
        if normalized != text:
            changes["unicode_normalized"] += 1
            text = normalized
    if config.strip_html:
        stripped = strip_html(text)
        if stripped != text:
            changes["html_stripped"] += 1
            text = stripped
    without_controls = remove_control_chars(text)
    if without_controls != text:
        changes["control_chars_removed"] += 1
        text = without_controls
    if config.collapse_whitespace:
        collapsed = collapse_whitespace(text)
        if collapsed != text:
            changes["whitespace_collapsed"] += 1
            text = collapsed
    return text


def training_view(text: str, clean: CleanConfig, pii: PiiConfig) -> str:
    """A new text as training saw its rows: cleaned, then PII redacted (a ``drop_row``
    recipe redacts too, since a single text cannot be dropped), then cut to
    ``clean.max_chars`` when ``clean.too_long`` is ``truncate`` (a ``drop`` recipe keeps
    it whole, since a single text cannot be dropped)."""
    text = clean_text(text, clean)
    if pii.mode != "off":
        mode = "redact" if pii.mode == "drop_row" else pii.mode
        text = scrub(text, mode=mode, types=pii.types)[0]
    if clean.too_long == "truncate":
        text = truncate_text(text, clean.max_chars)
    return text


def clean_dataset(
    dataset: Dataset, clean: CleanConfig, pii: PiiConfig, *, seed: int = 0
) -> CleanResult:
    """Apply normalization, length filters, PII handling and deduplication in that order."""
    result = CleanResult(dataset=Dataset([]))
    # A cell far beyond max_chars is cut (or dropped) before any normalization work on it.
    raw_limit = clean.max_chars * 4 + 1024
    truncate = clean.too_long == "truncate"
    survivors: list[Record] = []
    for record in dataset:
        result.rows_by_label[record.label] += 1
        raw = record.text
        too_long = len(raw) > raw_limit
        if too_long and not truncate:
            _drop_too_long(result, record)
            continue
        text = clean_text(raw[:raw_limit], clean, result.changes)
        if not text:
            _drop(result, record, "empty")
            continue
        if len(text) < clean.min_chars:
            _drop(result, record, "too_short")
            continue
        too_long = too_long or len(text) > clean.max_chars
        if too_long and not truncate:
            _drop_too_long(result, record)
            continue
        if pii.mode != "off":
            # Redact the whole text before any cut, so no half-cut PII escapes detection.
            scrubbed, matches = scrub(text, mode=pii.mode, types=pii.types)
            if matches:
                result.rows_with_pii += 1
                result.pii_hits.update(m.type for m in matches)
                if pii.mode == "drop_row":
                    _drop(result, record, "pii")
                    continue
                text = scrubbed
        if too_long:
            text = truncate_text(text, clean.max_chars)
            result.changes["truncated"] += 1
            result.too_long_by_label[record.label] += 1
        survivors.append(Record(id=record.id, text=text, label=record.label, meta=record.meta))

    if clean.duplicates != "off":
        survivors = _deduplicate(survivors, clean, result, seed=seed)
    result.dataset = Dataset(survivors)
    return result


def truncate_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, trimmed at the end. The cut moves
    back rather than split a redaction placeholder (``<PHONE>``), separate a combining
    mark or a low surrogate from the character before it."""
    if len(text) <= limit:
        return text
    end = limit
    for placeholder in PLACEHOLDERS.values():
        start = text.find(
            placeholder, max(0, limit - len(placeholder) + 1), limit + len(placeholder) - 1
        )
        if 0 <= start < end:
            end = start
    while end > 0 and (
        unicodedata.category(text[end]) in ("Mn", "Mc", "Me") or "\udc00" <= text[end] <= "\udfff"
    ):
        end -= 1
    return text[:end].rstrip() or text[:limit]


def _drop_too_long(result: CleanResult, record: Record) -> None:
    _drop(result, record, "too_long")
    result.too_long_by_label[record.label] += 1


def _drop(result: CleanResult, record: Record, reason: str) -> None:
    result.drops[reason] += 1
    result.dropped_ids[record.id] = reason


def _deduplicate(
    records: list[Record], config: CleanConfig, result: CleanResult, *, seed: int
) -> list[Record]:
    near_keys = [near_duplicate_key(r.text) for r in records]
    exact = config.duplicates == "exact"
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[record.text if exact else (near_keys[index] or record.text)].append(index)

    keep = [False] * len(records)
    for members in groups.values():
        kept = _resolve_group([records[i] for i in members], config.conflicting_labels, result)
        for offset, index in enumerate(members):
            keep[index] = offset in kept

    survivors = [r for r, k in zip(records, keep, strict=True) if k]
    if config.duplicates == "near":
        keys = [key for key, k in zip(near_keys, keep, strict=True) if k]
        survivors = _drop_similar(
            survivors, keys, config.near_duplicate_threshold, result, seed=seed
        )
    return survivors


def _resolve_group(group: list[Record], policy: str, result: CleanResult) -> set[int]:
    """Offsets of the records kept from one group of equal texts; counts the rest."""
    labels = Counter(r.label for r in group)
    if len(labels) > 1:
        result.conflicting_label_groups += 1
        if policy == "keep":
            return set(range(len(group)))
        winner = None
        if policy == "majority":
            (top, top_count), (_, second_count) = labels.most_common(2)
            winner = top if top_count > second_count else None
        if winner is None:
            for record in group:
                _drop(result, record, "conflicting_label")
            return set()
        first = next(i for i, r in enumerate(group) if r.label == winner)
        for offset, record in enumerate(group):
            if offset == first:
                continue
            if record.label != winner:
                _drop(result, record, "conflicting_label")
            else:
                _drop(result, record, _dup_kind(group[first], record))
                _remember(result, group[first], record)
        return {first}
    for record in group[1:]:
        _drop(result, record, _dup_kind(group[0], record))
        _remember(result, group[0], record)
    return {0}


def _dup_kind(kept: Record, dropped: Record) -> str:
    return "duplicate" if kept.text == dropped.text else "near_duplicate"


def _remember(result: CleanResult, kept: Record, dropped: Record) -> None:
    """Keep a few distinct near-duplicate pairs as examples for the report."""
    example = {"kept": kept.text, "dropped": dropped.text, "kind": "near"}
    if (
        len(result.duplicate_examples) < _MAX_EXAMPLES
        and kept.text != dropped.text
        and example not in result.duplicate_examples
    ):
        result.duplicate_examples.append(example)


def _drop_similar(
    records: list[Record], keys: list[str], threshold: float, result: CleanResult, *, seed: int
) -> list[Record]:
    """Drop texts within ``threshold`` Jaccard of an earlier text with the same label."""
    sets = DisjointSets(len(records))
    for i, j in near_duplicate_pairs(keys, threshold, seed=seed):
        if records[i].label != records[j].label:
            result.similar_with_other_label += 1
            continue
        sets.union(i, j)

    survivors = []
    for index, record in enumerate(records):
        root = sets.find(index)
        if root == index:
            survivors.append(record)
        else:
            _drop(result, record, "near_duplicate")
            _remember(result, records[root], record)
    return survivors
