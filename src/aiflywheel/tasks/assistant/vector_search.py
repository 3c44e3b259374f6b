"""Nearest passages of a query vector: exact (a matrix product) or an IVF index.

``ExactSearch`` multiplies the query with every stored embedding; ``IvfSearch`` (faiss
``IndexIVFFlat``, the ``ann`` extra) groups the rows under about sqrt(rows) k-means
centroids (at most 1,024) and scans only the 32 lists nearest the query.

Chosen by measurement over hnswlib, faiss's HNSW and usearch (a prototype of
``benchmarks/retrieval.py --compare-ann``, same vectors, 200 queries that were FAQ
query vectors plus noise; the benchmark's mode itself was not run yet). At 100,000
synthetic e5-like vectors (build on 2 shared cores, search on 1) every candidate
reached recall@5 >= 0.98 against exact search below 3 ms per query: hnswlib 0.75 ms
at 0.991 (M 16, ef 100), faiss HNSWFlat 1.38 ms at 0.993, usearch f32 2.84 ms at
0.993 (at i8 it lost recall: 0.962 after exact re-ranking), faiss IVFFlat 0.83 ms at
0.988 (nprobe 16 of 1,264 lists). What separated them was the build: IVF 59 s
against 88 s (hnswlib), 122 s (faiss HNSW) and 213 s (usearch), and it grows
linearly, where a graph's insertions slow down as it grows. On the shared 2-core
machine a hnswlib graph over 1,000,000 vectors had not finished after 12 minutes
(2 min 17 s of CPU: the machine was loaded about 18-fold), so its build could not be
measured at all; an IVF index adds and removes rows in place as a graph does (faiss's
HNSW cannot remove).

Both give the ``k`` best row numbers for a unit query vector; the caller recomputes
exact cosines from the stored embeddings for the rows it keeps, so an approximate
index only changes which rows are candidates, never their scores.

The IVF index labels rows with stable numbers: ``row_of_label[label]`` is the row a
label stands for now, -1 when removed. ``changed`` removes labels from the index and
adds new rows under new labels, so adding an entry to a large index costs one
assignment to a list, not a rebuild; the index object is shared with the previous
``IvfSearch``, which keeps answering with its own mapping (it ignores labels it does
not know, and misses the rows removed since; ``restore`` puts them back when a change
is abandoned).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiflywheel.errors import DataError, require_module

# Below this many chunks a matrix product is about as fast (0.3 ms per 10,000 rows of
# 384 floats): the index stays exact.
ANN_MIN_CHUNKS = 20_000
IVF_MAX_LISTS = 1024
IVF_TRAIN_PER_LIST = 40  # k-means on at most this many rows per list
IVF_NPROBE = 32  # lists scanned per query


def ann_available() -> bool:
    """Whether faiss (``faiss-cpu``, the ``ann`` extra) is installed."""
    return importlib.util.find_spec("faiss") is not None


class VectorSearch(Protocol):
    name: str

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        """Row numbers of the (about) ``k`` best rows for ``vector``."""
        ...


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, ties by index (also at the
    cut: of equal scores at the k-th place, the lowest indices are kept)."""
    if scores.size == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    if scores.size > k:
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(scores.size)
    return part[np.lexsort((part, -scores[part]))][:k]


class ExactSearch:
    """Every row's cosine with the query (unit rows): exact, linear in the rows."""

    name = "exact"

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = embeddings

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        return top_rows(self.embeddings @ vector, k)


def _faiss() -> Any:
    return require_module(
        "faiss", what="the approximate nearest-neighbour index", install="aiflywheel[ann]"
    )


def _lists_for(rows: int) -> int:
    """Inverted lists of an index over ``rows`` vectors: about sqrt(rows), at most
    ``IVF_MAX_LISTS``, and at least 39 rows per list to train k-means on."""
    return int(max(1, min(IVF_MAX_LISTS, round(np.sqrt(max(rows, 1))), rows // 39)))


class IvfSearch:
    """An inverted-file index (faiss ``IndexIVFFlat``, inner product on unit rows): the
    rows are grouped under k-means centroids, and a query scans the ``IVF_NPROBE`` lists
    whose centroids are nearest. Labels are stable row numbers (see the module
    docstring); removed labels leave the lists, new ones join their nearest list."""

    name = "ivf"

    def __init__(self, index: Any, row_of_label: np.ndarray, lock: threading.Lock) -> None:
        self.index = index
        self.row_of_label = row_of_label
        self._lock = lock  # one writer at a time on the shared index

    @classmethod
    def build(cls, embeddings: np.ndarray, *, threads: int = 1) -> IvfSearch:
        """An index over every row of ``embeddings`` (row i gets label i); the centroids
        are trained on at most ``IVF_TRAIN_PER_LIST`` rows per list, evenly spaced."""
        faiss = _faiss()
        rows, dim = embeddings.shape
        lists = _lists_for(rows)
        index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(int(dim)), int(dim), lists, faiss.METRIC_INNER_PRODUCT
        )
        data = np.ascontiguousarray(embeddings, dtype=np.float32)
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, threads))
        try:
            step = max(1, rows // (IVF_TRAIN_PER_LIST * lists))
            sample = data[::step] if rows else np.zeros((lists, dim), np.float32)
            index.train(np.ascontiguousarray(sample))
            if rows:
                index.add_with_ids(data, np.arange(rows, dtype=np.int64))
        finally:
            faiss.omp_set_num_threads(previous)
        return cls(index, np.arange(rows, dtype=np.int64), threading.Lock())

    @classmethod
    def load(cls, path: Path, row_of_label: np.ndarray, dim: int) -> IvfSearch:
        """An index written by ``save``; ``DataError`` when it does not match the rows."""
        try:
            index = _faiss().read_index(str(path))
        except (OSError, RuntimeError) as exc:
            raise DataError(f"cannot read the vector index {path}: {exc}") from None
        row_of_label = np.asarray(row_of_label, dtype=np.int64)
        live = int((row_of_label >= 0).sum())
        if index.d != dim or index.ntotal != live:
            raise DataError(
                f"vector index {path} holds {index.ntotal} vectors of dimension {index.d}, "
                f"expected {live} of dimension {dim}"
            )
        return cls(index, row_of_label, threading.Lock())

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (inside a folder the caller renames into place)."""
        with self._lock:
            _faiss().write_index(self.index, str(path))

    def __len__(self) -> int:
        return int((self.row_of_label >= 0).sum())

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        if k <= 0 or len(self) == 0:
            return np.zeros(0, dtype=np.int64)
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        params = _faiss().SearchParametersIVF(nprobe=min(IVF_NPROBE, self.index.nlist))
        # faiss's inverted lists are not safe to read while another thread changes them
        # (a knowledge-base entry added through the API): searches wait for a change
        with self._lock:
            _, labels = self.index.search(query, k, params=params)
        labels = labels[0]
        known = labels[(labels >= 0) & (labels < len(self.row_of_label))]  # newer: skipped
        rows = self.row_of_label[known]
        return rows[rows >= 0]

    def changed(self, keep: np.ndarray, new_vectors: np.ndarray | None) -> IvfSearch:
        """The search after rows where ``keep`` is False were removed (the rest keep
        their order) and ``new_vectors`` were appended as the last rows. The index is
        shared with this view, which keeps its own mapping (``restore`` undoes the
        removals when the change is abandoned)."""
        new_row = np.where(keep, np.cumsum(keep) - 1, -1)
        mapped = self.row_of_label.copy()
        alive = mapped >= 0
        mapped[alive] = new_row[mapped[alive]]
        removed = np.flatnonzero(alive & (mapped < 0))
        with self._lock:
            if removed.size:
                self.index.remove_ids(removed.astype(np.int64))
            if new_vectors is not None and len(new_vectors):
                first = len(mapped)
                labels = np.arange(first, first + len(new_vectors), dtype=np.int64)
                self.index.add_with_ids(np.ascontiguousarray(new_vectors, np.float32), labels)
                mapped = np.concatenate(
                    [mapped, int(keep.sum()) + np.arange(len(new_vectors), dtype=np.int64)]
                )
        return IvfSearch(self.index, mapped, self._lock)

    def restore(self, embeddings: np.ndarray, newer: IvfSearch) -> None:
        """Undo ``newer = self.changed(...)`` on the shared index (its write failed):
        the rows it removed are put back, the rows it added taken out."""
        with self._lock:
            back = np.flatnonzero(
                (self.row_of_label >= 0) & (newer.row_of_label[: len(self.row_of_label)] < 0)
            )
            added = np.arange(len(self.row_of_label), len(newer.row_of_label), dtype=np.int64)
            if added.size:
                self.index.remove_ids(added)
            if back.size:
                rows = self.row_of_label[back]
                self.index.add_with_ids(
                    np.ascontiguousarray(embeddings[rows], np.float32), back.astype(np.int64)
                )


__all__ = [
    "ANN_MIN_CHUNKS",
    "ExactSearch",
    "IvfSearch",
    "VectorSearch",
    "ann_available",
    "top_rows",
]
