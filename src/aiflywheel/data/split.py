"""Split: stratified, group-aware train/val/test assignment with a leakage check and k-folds.

The unit of assignment is a *linked group*: rows that share a ``group_by`` value (e.g. a
user id) or the same near-duplicate key always land in the same split, so a user never
appears on both sides and no normalized test text is present in train.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from aiflywheel.data.dataset import Dataset, Record
from aiflywheel.data.disjoint_sets import DisjointSets
from aiflywheel.data.text_normalize import near_duplicate_key
from aiflywheel.errors import SplitError
from aiflywheel.recipe import SplitConfig

SPLITS = ("train", "val", "test")


@dataclass
class SplitResult:
    """The three parts, optional k-fold ids over train+val, and the leakage check."""

    parts: dict[str, Dataset]
    folds: list[list[str]] | None
    leakage: dict[str, int]
    groups: dict[str, int] | None
    version: str


def split_dataset(dataset: Dataset, config: SplitConfig, *, seed: int) -> SplitResult:
    """Assign every record to train, val or test (deterministic for a seed)."""
    fractions = {"train": config.train, "val": config.val, "test": config.test}
    wanted = [name for name in SPLITS if fractions[name] > 0]
    units = _linked_units(dataset.records, config.group_by)
    if len(units) < len(wanted):
        what = "groups of " + repr(config.group_by) if config.group_by else "distinct texts"
        more = len(wanted) - len(units)
        one = "group" if config.group_by else "text"
        raise SplitError(
            f"cannot split {len(units)} {what} into {len(wanted)} non-empty parts "
            f"({', '.join(wanted)}); add at least {more} more distinct "
            f"{one if more == 1 else one + 's'} (rows that differ beyond case, spacing and "
            "punctuation)"
        )
    rng = np.random.default_rng(seed)
    if config.column:
        assignment = _given_splits(dataset.records, config.column)
    else:
        assignment = _assign_units(units, dataset.records, fractions, config.stratify, rng)
        _fill_empty_parts(assignment, units, wanted)

    parts = {name: Dataset(dataset.records[i] for i in sorted(assignment[name])) for name in SPLITS}
    folds = None
    if config.k_folds:
        folds = _k_folds(parts, config, units, dataset.records, rng)
    groups = None
    if config.group_by:
        groups = {
            name: len({r.meta.get(config.group_by, "") for r in parts[name]}) for name in SPLITS
        }
    leakage = leakage_check(parts, config.group_by)
    return SplitResult(
        parts=parts, folds=folds, leakage=leakage, groups=groups, version=_version(parts, folds)
    )


GIVEN_SPLIT_NAMES = {"train": "train", "val": "val", "dev": "val", "validation": "val",
                     "test": "test"}  # fmt: skip


def _given_splits(records: list[Record], column: str) -> dict[str, list[int]]:
    """Rows assigned by their own ``column`` value (split.column)."""
    assignment: dict[str, list[int]] = {name: [] for name in SPLITS}
    for index, record in enumerate(records):
        value = str(record.meta.get(column, "")).strip().lower()
        if value not in GIVEN_SPLIT_NAMES:
            raise SplitError(
                f"split.column {column!r}: row {record.id} has {value!r}; expected one of "
                "train, val, dev, test (add the column to data.columns.meta)"
            )
        assignment[GIVEN_SPLIT_NAMES[value]].append(index)
    empty = [name for name in ("train", "test") if not assignment[name]]
    if empty:
        raise SplitError(f"split.column {column!r}: no row says {' or '.join(empty)}")
    return assignment


def leakage_check(parts: dict[str, Dataset], group_by: str | None = None) -> dict[str, int]:
    """Count normalized texts (and groups) that appear in more than one split."""
    keys = {name: {near_duplicate_key(r.text) for r in parts[name]} for name in SPLITS}
    result = {
        "test_in_train": len(keys["test"] & keys["train"]),
        "val_in_train": len(keys["val"] & keys["train"]),
        "test_in_val": len(keys["test"] & keys["val"]),
        "groups_shared": 0,
    }
    if group_by:
        groups = {name: {r.meta.get(group_by, "") for r in parts[name]} - {""} for name in SPLITS}
        shared = (
            (groups["train"] & groups["val"])
            | (groups["train"] & groups["test"])
            | (groups["val"] & groups["test"])
        )
        result["groups_shared"] = len(shared)
    return result


def _linked_units(records: list[Record], group_by: str | None) -> list[list[int]]:
    """Connected components of rows linked by group value or near-duplicate key."""
    sets = DisjointSets(len(records))
    first_seen: dict[tuple[str, str], int] = {}
    for index, record in enumerate(records):
        links = [("text", near_duplicate_key(record.text) or record.text)]
        if group_by and record.meta.get(group_by, ""):
            links.append(("group", record.meta[group_by]))
        for link in links:
            other = first_seen.setdefault(link, index)
            if other != index:
                sets.union(index, other)
    units: dict[int, list[int]] = defaultdict(list)
    for index in range(len(records)):
        units[sets.find(index)].append(index)
    return list(units.values())


def _assign_units(
    units: list[list[int]],
    records: list[Record],
    fractions: dict[str, float],
    stratify: bool,
    rng: np.random.Generator,
) -> dict[str, list[int]]:
    """Greedy largest-deficit assignment of shuffled units, per label when stratified."""
    label_of = [r.label if stratify else None for r in records]
    totals = Counter(label_of)
    target = {name: {lab: fractions[name] * n for lab, n in totals.items()} for name in SPLITS}
    current = {name: Counter() for name in SPLITS}
    order = rng.permutation(len(units))
    # Large units first (stable within a size), so they cannot overshoot late.
    order = sorted(order, key=lambda u: -len(units[u]))
    assignment: dict[str, list[int]] = {name: [] for name in SPLITS}
    for unit_index in order:
        unit = units[unit_index]
        unit_labels = Counter(label_of[i] for i in unit)
        best_name, best_score = None, None
        for name in SPLITS:
            if fractions[name] <= 0:
                continue
            score = sum(
                count * (target[name][lab] - current[name][lab]) / max(target[name][lab], 1e-9)
                for lab, count in unit_labels.items()
            )
            if best_score is None or score > best_score:
                best_name, best_score = name, score
        assignment[best_name].extend(unit)
        current[best_name].update(unit_labels)
    return assignment


def _fill_empty_parts(
    assignment: dict[str, list[int]], units: list[list[int]], wanted: list[str]
) -> None:
    """Give every wanted part a unit: one that the proportional assignment left empty (few
    units, many labels) takes the last unit of the part with the most units. There are at
    least as many units as wanted parts, so every part ends up non-empty."""
    unit_of = {index: u for u, unit in enumerate(units) for index in unit}
    held = {name: list(dict.fromkeys(unit_of[i] for i in assignment[name])) for name in SPLITS}
    for name in wanted:
        if held[name]:
            continue
        donor = max(wanted, key=lambda other: (len(held[other]), -SPLITS.index(other)))
        moved = held[donor].pop()
        held[name].append(moved)
        assignment[donor] = [i for i in assignment[donor] if unit_of[i] != moved]
        assignment[name] = list(units[moved])


def _k_folds(
    parts: dict[str, Dataset],
    config: SplitConfig,
    units: list[list[int]],
    records: list[Record],
    rng: np.random.Generator,
) -> list[list[str]]:
    """Stratified, group-aware fold ids over train+val (the test split stays frozen)."""
    pool_ids = {r.id for name in ("train", "val") for r in parts[name]}
    pool_units = [u for u in units if records[u[0]].id in pool_ids]
    if len(pool_units) < config.k_folds:
        raise SplitError(
            f"split.k_folds={config.k_folds} needs at least {config.k_folds} distinct "
            f"texts or groups in train+val, found {len(pool_units)}"
        )
    fraction = 1.0 / config.k_folds
    fold_names = [str(k) for k in range(config.k_folds)]
    fractions = dict.fromkeys(fold_names, fraction)
    label_of = [r.label if config.stratify else None for r in records]
    totals = Counter(label_of[i] for u in pool_units for i in u)
    current = {name: Counter() for name in fold_names}
    folds: dict[str, list[str]] = {name: [] for name in fold_names}
    order = sorted(rng.permutation(len(pool_units)), key=lambda u: -len(pool_units[u]))
    for unit_index in order:
        unit = pool_units[unit_index]
        unit_labels = Counter(label_of[i] for i in unit)
        name = max(
            fold_names,
            key=lambda f: sum(
                c
                * (fractions[f] * totals[lab] - current[f][lab])
                / max(fractions[f] * totals[lab], 1e-9)
                for lab, c in unit_labels.items()
            ),
        )
        folds[name].extend(records[i].id for i in unit)
        current[name].update(unit_labels)
    return [sorted(folds[name]) for name in fold_names]


def _version(parts: dict[str, Dataset], folds: list[list[str]] | None) -> str:
    payload = {name: [r.id for r in parts[name]] for name in SPLITS}
    payload["folds"] = folds or []
    blob = json.dumps(payload, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()
