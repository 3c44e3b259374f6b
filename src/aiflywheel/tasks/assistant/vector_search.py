"""Nearest passages of a query vector: exact (a matrix product) or an HNSW graph.

``ExactSearch`` multiplies the query with every stored embedding; ``HnswSearch`` walks
an approximate nearest-neighbour graph (hnswlib, the ``ann`` extra). Chosen by
measurement (``benchmarks/retrieval.py --compare-ann``) over faiss-cpu and usearch: at
100,000 synthetic e5-like vectors (M 16, construction ef 100, build on 2 shared cores,
search on 1) hnswlib built fastest (88 s, against 122 s for faiss's HNSWFlat and 213 s
for usearch at f32) and answered fastest at the same recall (0.75 ms per query at
recall@5 0.991 against exact, ef 100; faiss 1.38 ms at 0.993; usearch 2.84 ms at
0.993; usearch at i8 loses recall: 0.962 after exact re-ranking); and it removes and
adds entries in place (faiss's HNSW cannot remove; its IVF index needs training). The
product builds with construction ef 64 (a million vectors in a fraction of the time)
and searches with ef 200.

Both give the ``k`` best row numbers for a unit query vector; the caller recomputes
exact cosines from the stored embeddings for the rows it keeps, so an approximate
index only changes which rows are candidates, never their scores.

An HNSW graph labels rows with stable numbers: ``row_of_label[label]`` is the row a
label stands for now, -1 when removed. ``changed`` marks removed labels deleted in the
graph and inserts new rows under new labels, so adding an entry to a large index costs
one insertion, not a rebuild; the graph object is shared with the previous
``HnswSearch``, which keeps answering with its own mapping (it ignores labels it does
not know, and misses the rows removed since).
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aiflywheel.errors import DataError, require_module

# Below this many chunks a matrix product is as fast as a graph walk (0.3 ms per
# 10,000 rows of 384 floats): the index stays exact.
ANN_MIN_CHUNKS = 20_000
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# ef at search time: candidates kept while walking the graph (at least the k asked for)
HNSW_EF_SEARCH = 200


def ann_available() -> bool:
    """Whether hnswlib (the ``ann`` extra) is installed."""
    return importlib.util.find_spec("hnswlib") is not None


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


def _hnswlib() -> Any:
    return require_module(
        "hnswlib", what="the approximate nearest-neighbour index", install="aiflywheel[ann]"
    )


class HnswSearch:
    """An HNSW graph (inner product on unit rows) over the rows of an embedding matrix."""

    name = "hnsw"

    def __init__(
        self,
        graph: Any,
        row_of_label: np.ndarray,
        lock: threading.Lock,
        deleted: set[int] | None = None,
    ) -> None:
        self.graph = graph
        self.row_of_label = row_of_label
        self._lock = lock  # one writer at a time on the shared graph
        self._deleted = deleted if deleted is not None else set()  # marked in the graph

    @classmethod
    def build(cls, embeddings: np.ndarray, *, threads: int = 1) -> HnswSearch:
        """A graph over every row of ``embeddings`` (row i gets label i)."""
        rows, dim = embeddings.shape
        graph = _hnswlib().Index(space="ip", dim=int(dim))
        graph.init_index(max_elements=max(rows, 1), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        graph.set_num_threads(max(1, threads))
        if rows:
            graph.add_items(np.ascontiguousarray(embeddings, dtype=np.float32), np.arange(rows))
        graph.set_num_threads(1)
        graph.set_ef(HNSW_EF_SEARCH)
        return cls(graph, np.arange(rows, dtype=np.int64), threading.Lock())

    def restore(self) -> None:
        """Unmark the rows of this view that a later ``changed`` marked deleted (that
        change was not kept, e.g. its write failed)."""
        with self._lock:
            for label in sorted(self._deleted):
                if label < len(self.row_of_label) and self.row_of_label[label] >= 0:
                    self.graph.unmark_deleted(label)
                    self._deleted.discard(label)

    @classmethod
    def load(cls, path: Path, row_of_label: np.ndarray, dim: int) -> HnswSearch:
        """A graph written by ``save``; ``DataError`` when it does not match the rows."""
        graph = _hnswlib().Index(space="ip", dim=int(dim))
        try:
            graph.load_index(str(path), max_elements=max(len(row_of_label), 1))
        except (OSError, RuntimeError) as exc:
            raise DataError(f"cannot read the vector index {path}: {exc}") from None
        if graph.get_current_count() != len(row_of_label):
            raise DataError(
                f"vector index {path} holds {graph.get_current_count()} vectors, expected "
                f"{len(row_of_label)}"
            )
        graph.set_num_threads(1)
        graph.set_ef(HNSW_EF_SEARCH)
        row_of_label = np.asarray(row_of_label, dtype=np.int64)
        deleted = {int(label) for label in np.flatnonzero(row_of_label < 0)}
        for label in deleted:
            with contextlib.suppress(RuntimeError):  # already marked when it was saved
                graph.mark_deleted(label)
        return cls(graph, row_of_label, threading.Lock(), deleted)

    def save(self, path: Path) -> None:
        """Write the graph to ``path`` (the caller renames it into place)."""
        with self._lock:
            self.graph.save_index(str(path))

    def __len__(self) -> int:
        return int((self.row_of_label >= 0).sum())

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        live = len(self)
        if k <= 0 or live == 0:
            return np.zeros(0, dtype=np.int64)
        k = min(k, live)
        self.graph.set_ef(max(HNSW_EF_SEARCH, k))
        labels, distances = self.graph.knn_query(np.asarray(vector, dtype=np.float32), k=k)
        labels = labels[0].astype(np.int64)
        known = labels[labels < len(self.row_of_label)]  # added after this view: skipped
        rows = self.row_of_label[known]
        return rows[rows >= 0]

    def changed(self, keep: np.ndarray, new_vectors: np.ndarray | None) -> HnswSearch:
        """The search after rows where ``keep`` is False were removed (the rest keep
        their order) and ``new_vectors`` were appended as the last rows."""
        new_row = np.where(keep, np.cumsum(keep) - 1, -1)
        mapped = self.row_of_label.copy()
        alive = mapped >= 0
        mapped[alive] = new_row[mapped[alive]]
        with self._lock:
            for label in np.flatnonzero(alive & (mapped < 0)):
                self.graph.mark_deleted(int(label))
                self._deleted.add(int(label))
            if new_vectors is not None and len(new_vectors):
                first = self.graph.get_current_count()
                labels = np.arange(first, first + len(new_vectors))
                needed = first + len(new_vectors)
                if needed > self.graph.get_max_elements():
                    self.graph.resize_index(max(needed, int(1.25 * self.graph.get_max_elements())))
                self.graph.add_items(np.ascontiguousarray(new_vectors, dtype=np.float32), labels)
                kept = int(keep.sum())
                mapped = np.concatenate(
                    [mapped, kept + np.arange(len(new_vectors), dtype=np.int64)]
                )
        return HnswSearch(self.graph, mapped, self._lock, self._deleted)


__all__ = [
    "ANN_MIN_CHUNKS",
    "ExactSearch",
    "HnswSearch",
    "VectorSearch",
    "ann_available",
    "top_rows",
]
