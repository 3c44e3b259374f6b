"""Near-duplicate detection with MinHash and locality-sensitive hashing.

Texts become sets of character 3-grams (of their near-duplicate key). MinHash
signatures put likely-similar texts into shared LSH buckets; every candidate pair is
then verified with the exact Jaccard similarity, so the result has no false positives
and is deterministic for a seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

_PRIME = np.uint64(4294967311)  # > 2**32
_NUM_PERM = 128
_SHINGLE = 3
MIN_SHINGLES = 8


def shingles(key: str) -> set[str]:
    return {key[i : i + _SHINGLE] for i in range(len(key) - _SHINGLE + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _band_rows(threshold: float) -> int:
    """Rows per band: the largest that still finds a pair at ``threshold`` with p >= 0.98."""
    best = 1
    for rows in (1, 2, 4, 8, 16, 32):
        bands = _NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= 0.98:
            best = rows
    return best


def near_duplicate_pairs(
    keys: Sequence[str], threshold: float, seed: int = 0
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of keys whose 3-gram Jaccard similarity is >= ``threshold``.

    Keys with fewer than ``MIN_SHINGLES`` 3-grams are skipped: on very short texts a
    single character changes the meaning, and exact-key deduplication covers them.
    """
    sets = [shingles(k) for k in keys]
    docs = [i for i, s in enumerate(sets) if len(s) >= MIN_SHINGLES]
    if len(docs) < 2:
        return []
    hashes = []
    owners = []
    for position, doc in enumerate(docs):
        values = [zlib.crc32(s.encode("utf-8")) for s in sets[doc]]
        hashes.extend(values)
        owners.extend([position] * len(values))
    hash_array = np.asarray(hashes, dtype=np.uint64)
    owner_array = np.asarray(owners, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, owner_array[1:] != owner_array[:-1]])

    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**31 - 1, size=_NUM_PERM, dtype=np.uint64)
    b = rng.integers(0, 2**31 - 1, size=_NUM_PERM, dtype=np.uint64)
    signatures = np.empty((len(docs), _NUM_PERM), dtype=np.uint64)
    for p in range(_NUM_PERM):
        permuted = (a[p] * hash_array + b[p]) % _PRIME
        signatures[:, p] = np.minimum.reduceat(permuted, starts)

    rows = _band_rows(threshold)
    candidates: set[tuple[int, int]] = set()
    for band in range(_NUM_PERM // rows):
        block = signatures[:, band * rows : (band + 1) * rows]
        buckets: dict[bytes, int] = {}
        for position in range(len(docs)):
            signature = block[position].tobytes()
            first = buckets.setdefault(signature, position)
            if first != position:
                candidates.add((first, position))

    pairs = []
    for first, second in sorted(candidates):
        i, j = docs[first], docs[second]
        if jaccard(sets[i], sets[j]) >= threshold:
            pairs.append((i, j))
    return pairs
