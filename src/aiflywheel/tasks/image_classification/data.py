"""The image data stage: read a source, sanitize every image, deduplicate, split, report.

Sources: a folder with one sub-folder per label; a CSV or JSONL file of image paths
(relative to the file) and labels; a zip holding a folder per label (optionally under
one top folder) or such a CSV/JSONL. Every dropped image is counted in the data report
with one line (its origin and why); nothing is silently skipped. Writes into the work
folder::

    splits/{train,val,test}.{safetensors,jsonl}   pixels + index (id, label, hashes, meta)
    data_report.json data_report.html              drops, duplicates, leakage, balance,
                                                   sizes, a contact sheet per class
"""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from aiflywheel.errors import DataError
from aiflywheel.files import write_json_atomic
from aiflywheel.tasks.image_classification.dataset import ImageSet
from aiflywheel.tasks.image_classification.images import (
    ImageRejected,
    decode_image,
    perceptual_hash,
    pixel_hash,
    sha256,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
TABLE_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl"}


@dataclass
class RawImage:
    origin: str  # where it came from, for report lines
    label: str
    read: Callable[[], bytes]


def _label_folder_images(
    entries: list[tuple[PurePosixPath, Callable[[], bytes]]],
) -> Iterator[RawImage]:
    for path, read in entries:
        if len(path.parts) < 2:
            continue
        yield RawImage(origin=path.as_posix(), label=path.parts[-2], read=read)


def _table_rows(text: str, kind: str, origin: str, path_col: str, label_col: str):
    if kind == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{origin} line {n}: not JSON ({exc.msg})") from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or path_col not in row or label_col not in row:
            raise DataError(
                f"{origin} row {n}: expected columns {path_col!r} and {label_col!r} "
                f"(image.path_column / image.label_column)"
            )
        yield str(row[path_col]), str(row[label_col]).strip()


def _read_file(path: Path) -> Callable[[], bytes]:
    return lambda: path.read_bytes()


def read_source(source: Path, fmt: str, path_col: str, label_col: str) -> list[RawImage]:
    """The images a source names, unread (bytes are read when decoded)."""
    if not source.exists():
        raise DataError(f"image.source {source} does not exist")
    if fmt == "auto":
        if source.is_dir():
            fmt = "folder"
        elif source.suffix.lower() == ".zip":
            fmt = "zip"
        elif source.suffix.lower() in TABLE_SUFFIXES:
            fmt = TABLE_SUFFIXES[source.suffix.lower()]
        else:
            raise DataError(
                f"image.source {source}: expected a folder, a .zip, a .csv or a .jsonl file"
            )
    if fmt == "folder":
        if not source.is_dir():
            raise DataError(f"image.source {source} is not a folder")
        entries = [
            (PurePosixPath(p.relative_to(source).as_posix()), _read_file(p))
            for p in sorted(source.glob("*/*"))
            if p.is_file() and not p.name.startswith(".")
        ]
        return list(_label_folder_images(entries))
    if fmt in ("csv", "jsonl"):
        text = source.read_text(encoding="utf-8-sig")
        return [
            RawImage(origin=path, label=label, read=_read_file(source.parent / path))
            for path, label in _table_rows(text, fmt, source.name, path_col, label_col)
        ]
    return _read_zip(source, path_col, label_col)


def _read_zip(source: Path, path_col: str, label_col: str) -> list[RawImage]:
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise DataError(f"image.source {source} is not a readable zip file") from None
    infos = [i for i in archive.infolist() if not i.is_dir() and "__MACOSX" not in i.filename]

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        return lambda: archive.read(info)

    tables = [i for i in infos if PurePosixPath(i.filename).suffix.lower() in TABLE_SUFFIXES]
    if tables:
        table = tables[0]
        kind = TABLE_SUFFIXES[PurePosixPath(table.filename).suffix.lower()]
        base = PurePosixPath(table.filename).parent
        by_name = {i.filename: i for i in infos}
        out = []
        for path, label in _table_rows(
            archive.read(table).decode("utf-8-sig"), kind, table.filename, path_col, label_col
        ):
            name = (base / path).as_posix()
            info = by_name.get(name)
            read = reader(info) if info else (lambda name=name: _missing(name))
            out.append(RawImage(origin=name, label=label, read=read))
        return out
    paths = [(PurePosixPath(i.filename), reader(i)) for i in infos]
    tops = {p.parts[0] for p, _ in paths}
    if len(tops) == 1 and all(len(p.parts) == 3 for p, _ in paths):  # one top folder
        paths = [(PurePosixPath(*p.parts[1:]), r) for p, r in paths]
    return list(_label_folder_images(paths))


def _missing(name: str) -> bytes:
    raise FileNotFoundError(name)


@dataclass
class Cleaned:
    images: ImageSet
    drops: list[dict[str, str]]
    notes: list[dict[str, str]]
    exact_duplicates: int
    conflicting_duplicates: int


def clean_images(raw: list[RawImage], config, report: Callable[[str], None]) -> Cleaned:
    """Decode every image (dropping the unusable), then drop exact duplicates by pixels."""
    pixels, labels, ids, meta = [], [], [], []
    drops: list[dict[str, str]] = []
    notes: list[dict[str, str]] = []
    limits = config.limits
    for item in raw:
        if not item.label:
            drops.append({"origin": item.origin, "kind": "no label", "reason": "empty label"})
            continue
        try:
            data = item.read()
        except OSError as exc:
            drops.append(
                {"origin": item.origin, "kind": "unreadable", "reason": f"cannot read ({exc})"}
            )
            continue
        try:
            decoded = decode_image(
                data,
                size=config.size,
                channels=config.channels,
                max_bytes=limits.max_bytes,
                max_pixels=limits.max_pixels,
                min_side=limits.min_side,
                wrong_mode=config.wrong_mode,
            )
        except ImageRejected as exc:
            drops.append({"origin": item.origin, "kind": exc.kind, "reason": str(exc)})
            continue
        for note in decoded.notes:
            notes.append({"origin": item.origin, "note": note})
        pixels.append(decoded.pixels)
        labels.append(item.label)
        ids.append(item.origin)
        meta.append(
            {
                "sha256": sha256(data),
                "pixel_hash": pixel_hash(decoded.pixels),
                "width": decoded.width,
                "height": decoded.height,
                "format": decoded.format,
            }
        )
    # Exact duplicates (same pixels after decoding): keep the first; if copies disagree on
    # the label, drop them all (the data cannot say which label is right).
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(meta):
        by_hash[m["pixel_hash"]].append(i)
    keep, exact, conflicting = [], 0, 0
    for group in by_hash.values():
        if len({labels[i] for i in group}) > 1:
            conflicting += len(group)
            for i in group:
                drops.append(
                    {
                        "origin": ids[i],
                        "kind": "conflicting duplicate",
                        "reason": "the same image is labelled "
                        + " and ".join(sorted({labels[j] for j in group})),
                    }
                )
            continue
        keep.append(group[0])
        exact += len(group) - 1
    keep.sort()
    size, channels = config.size, config.channels
    stack = np.stack(pixels) if pixels else np.zeros((0, size, size, channels), np.uint8)
    images = ImageSet(stack, labels, ids, meta).take(keep)
    for i, m in enumerate(images.meta):
        m["phash"] = f"{perceptual_hash(images.pixels[i]):016x}"
    counts = Counter(images.labels)
    few = {label for label, n in counts.items() if n < config.min_images_per_label}
    for i, label in enumerate(images.labels):
        if label in few:
            drops.append(
                {
                    "origin": images.ids[i],
                    "kind": "label too small",
                    "reason": f"label {label!r} has {counts[label]} image(s), fewer than "
                    f"image.min_images_per_label {config.min_images_per_label}",
                }
            )
    images = images.take([i for i, label in enumerate(images.labels) if label not in few])
    for drop in drops:
        report(f"dropped {drop['origin']}: {drop['reason']}")
    return Cleaned(images, drops, notes, exact, conflicting)


def split_images(images: ImageSet, split, seed: int) -> dict[str, ImageSet]:
    """Stratified train/val/test with at least one image of every label in each split."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(images.labels):
        by_label[label].append(i)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_label):
        index = by_label[label]
        rng.shuffle(index)
        n = len(index)
        n_test = max(1, round(n * split.test))
        n_val = max(1 if split.val > 0 else 0, round(n * split.val))
        if n - n_test - n_val < 1:
            n_val = max(0, n - n_test - 1)
        parts["test"] += index[:n_test]
        parts["val"] += index[n_test : n_test + n_val]
        parts["train"] += index[n_test + n_val :]
    return {name: images.take(sorted(index)) for name, index in parts.items()}


def near_duplicates(parts: dict[str, ImageSet], bits: int, limit: int = 4_000_000) -> dict:
    """Pairs of images whose perceptual hashes differ by at most ``bits``: within the
    training split, and across splits (leakage: the test split then measures memory)."""
    hashes = {
        name: np.array([int(m["phash"], 16) for m in part.meta], dtype=np.uint64)
        for name, part in parts.items()
    }

    def close(a: np.ndarray, b: np.ndarray) -> int:
        if not len(a) or not len(b):
            return 0
        found = 0
        step = max(1, limit // max(1, len(b)))
        for start in range(0, len(a), step):
            ones = np.bitwise_count(np.bitwise_xor(a[start : start + step, None], b[None, :]))
            found += int((ones <= bits).sum())
        return found

    train = hashes["train"]
    within = (close(train, train) - len(train)) // 2
    across = {
        f"{a}-{b}": close(hashes[a], hashes[b])
        for a, b in (("train", "test"), ("train", "val"), ("val", "test"))
    }
    return {"bits": bits, "within_train_pairs": within, "across_splits_pairs": across}


def exact_leakage(parts: dict[str, ImageSet]) -> dict[str, int]:
    """Images whose pixels appear in two splits (0 after deduplication; checked anyway)."""
    keys = {name: {m["pixel_hash"] for m in part.meta} for name, part in parts.items()}
    return {
        f"{a}-{b}": len(keys[a] & keys[b])
        for a, b in (("train", "test"), ("train", "val"), ("val", "test"))
    }


def prepare_images(recipe, work_dir: Path, report: Callable[[str], None]) -> dict[str, Any]:
    """The data stage for ``recipe``: read, clean, split, write splits and the report."""
    from aiflywheel.tasks.image_classification.report_html import write_data_report

    config = recipe.image
    source = Path(config.source)
    if not source.is_absolute():
        source = recipe.base_dir / source
    raw = read_source(source, config.format, config.path_column, config.label_column)
    if not raw:
        raise DataError(
            f"image.source {source} holds no images (a folder needs one sub-folder per label)"
        )
    report(f"reading {len(raw):,} images from {source}")
    cleaned = clean_images(raw, config, report)
    labels = sorted(set(cleaned.images.labels))
    if len(labels) < 2:
        raise DataError(
            f"after cleaning, {len(cleaned.images)} images with {len(labels)} label(s) are "
            f"left; an image classifier needs at least 2 labels (see data_report.json)"
        )
    parts = split_images(cleaned.images, recipe.split, recipe.seed)
    for name, part in parts.items():
        part.save(work_dir / "splits" / name)
    write_json_atomic(work_dir / "splits" / "labels.json", labels)
    data_report = build_data_report(source, raw, cleaned, parts, config)
    write_json_atomic(work_dir / "data_report.json", data_report)
    write_data_report(data_report, parts, work_dir / "data_report.html")
    return data_report


def build_data_report(source, raw, cleaned: Cleaned, parts, config) -> dict[str, Any]:
    images = cleaned.images
    widths = [m["width"] for m in images.meta]
    heights = [m["height"] for m in images.meta]
    kinds = Counter(d["kind"] for d in cleaned.drops)
    return {
        "source": str(source),
        "rows": {
            "read": len(raw),
            "kept": len(images),
            "dropped": len(cleaned.drops),
            "exact_duplicates_removed": cleaned.exact_duplicates,
        },
        "drops_by_kind": dict(sorted(kinds.items())),
        "drops": cleaned.drops,
        "notes": cleaned.notes,
        "labels": {"counts": dict(sorted(Counter(images.labels).items()))},
        "splits": {
            name: {"rows": len(part), "labels": dict(sorted(Counter(part.labels).items()))}
            for name, part in parts.items()
        },
        "sizes": {
            "width": _summary(widths),
            "height": _summary(heights),
            "formats": dict(Counter(m["format"] for m in images.meta)),
            "input": f"{config.size}x{config.size}x{config.channels}",
        },
        "leakage": {"exact": exact_leakage(parts)},
        "near_duplicates": near_duplicates(parts, config.near_duplicate_bits),
    }


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": float(np.median(values)), "max": max(values)}
