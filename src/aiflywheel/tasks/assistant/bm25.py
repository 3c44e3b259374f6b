"""Okapi BM25 over a sparse matrix, with a Chinese/English tokenizer.

``bm25_tokens`` normalizes the text (NFKC, lower case), cuts runs of Han characters
with jieba's search mode (words and the shorter words inside them, so ``退款申请`` also
matches ``退款``), takes words and numbers from other text, even when they touch Han
characters (``我的order什么时候ship`` gives ``order`` and ``ship``), reduces English words
to a crude stem (``grounding.light_stem``: "shipping" ~ "ship", "refunds" ~ "refund"),
and drops punctuation and a small stopword list per language (question words,
function words that every FAQ question shares, and the pieces of contractions such as
the "t" of "don't").

``Bm25Index`` keeps raw term counts (documents x terms, CSR) so it can add and remove
documents, and a weight matrix (CSC) with each cell's BM25 contribution

    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avglen))
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))

so a query is one sparse column slice times the query's term counts: a few ms over
100,000 documents. Documents are numbered 0..n-1 in insertion order; removing some
renumbers the rest in order.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import DataError, require_module
from aiflywheel.tasks.assistant.grounding import light_stem

ASSISTANT_EXTRA = "pip install 'aiflywheel[assistant]'"
# Bump when bm25_tokens changes: stored term counts must then be rebuilt.
TOKENIZER_VERSION = 2

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RUN = re.compile(f"[{_HAN}]+")
# A run of Han characters, or a run of other letters and digits (never both in one).
_PIECE = re.compile(f"([{_HAN}]+)|([^\\W_{_HAN}]+)")

STOPWORDS_EN = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "to",
        "of",
        "and",
        "or",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "from",
        "as",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "me",
        "my",
        "we",
        "our",
        "us",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "their",
        "do",
        "does",
        "did",
        "how",
        "what",
        "when",
        "where",
        "why",
        "which",
        "who",
        "whom",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "there",
        "here",
        "so",
        "if",
        "than",
        "then",
        "please",
        "hi",
        "hello",
        # pieces of contractions: don't, it's, I'm, I'd, I've, we'll, you're
        "t",
        "s",
        "m",
        "d",
        "ve",
        "ll",
        "re",
        "don",
        "doesn",
        "didn",
        "isn",
        "aren",
        "wasn",
        "weren",
        "haven",
        "hasn",
        "hadn",
        "wouldn",
        "couldn",
        "shouldn",
    ]
)
STOPWORDS_ZH = frozenset(
    [
        "的",
        "了",
        "是",
        "在",
        "我",
        "我的",
        "我们",
        "你",
        "你们",
        "您",
        "吗",
        "呢",
        "吧",
        "啊",
        "呀",
        "哦",
        "和",
        "与",
        "及",
        "也",
        "就",
        "都",
        "而",
        "或",
        "这",
        "那",
        "这个",
        "那个",
        "个",
        "一个",
        "有",
        "要",
        "会",
        "能",
        "可以",
        "请",
        "请问",
        "怎么",
        "怎么样",
        "怎样",
        "如何",
        "什么",
        "为什么",
        "哪",
        "哪里",
        "哪个",
        "嘛",
        "么",
        "之",
        "着",
        "过",
        "把",
        "被",
        "给",
        "让",
        "对",
        "从",
        "到",
        "还",
        "又",
        "很",
        "想",
    ]
)
STOPWORDS = STOPWORDS_EN | STOPWORDS_ZH

_jieba_lock = threading.Lock()
_jieba: Any = None


def jieba_module() -> Any:
    """jieba, initialised once with its dictionary-loading log lines silenced (also used
    by :mod:`aiflywheel.tasks.text_classification.explain` to occlude Chinese words)."""
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                module = require_module(
                    "jieba", what="Chinese word segmentation for BM25", install=ASSISTANT_EXTRA
                )
                module.setLogLevel(logging.WARNING)
                module.initialize()
                _jieba = module
    return _jieba


def bm25_tokens(text: str) -> list[str]:
    """Search terms of ``text``: jieba words for Han runs, lower-cased and lightly
    stemmed words and numbers for the rest, without punctuation, whitespace and
    stopwords (see the module docstring)."""
    tokens: list[str] = []
    for match in _PIECE.finditer(unicodedata.normalize("NFKC", text).lower()):
        han, word = match.groups()
        if han:
            for token in jieba_module().cut_for_search(han):
                if token not in STOPWORDS:
                    tokens.append(token)
        elif word not in STOPWORDS:
            tokens.append(light_stem(word))
    return tokens


def _sparse() -> Any:
    return require_module("scipy.sparse", what="the BM25 index", install=ASSISTANT_EXTRA)


class Bm25Index:
    """Okapi BM25 over numbered documents; build with ``Bm25Index.build(token_lists)``."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        """An empty index with BM25 parameters ``k1`` (term saturation) and ``b``
        (length normalisation)."""
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self.vocabulary: dict[str, int] = {}
        self.tokenizer_version = TOKENIZER_VERSION
        self._counts = _sparse().csr_matrix((0, 0), dtype=np.float32)
        self._weights = self._counts.tocsc()

    # ------------------------------------------------------------ building

    @classmethod
    def build(
        cls, token_lists: Sequence[Sequence[str]], *, k1: float = 1.2, b: float = 0.75
    ) -> Bm25Index:
        """An index over ``token_lists`` (document i = token_lists[i])."""
        index = cls(k1=k1, b=b)
        index.add(token_lists)
        return index

    @classmethod
    def from_counts(
        cls, counts: Any, terms: Sequence[str], *, k1: float = 1.2, b: float = 0.75
    ) -> Bm25Index:
        """An index over a documents x terms count matrix (column j counts ``terms[j]``)."""
        counts = _sparse().csr_matrix(counts, dtype=np.float32)
        if counts.shape[1] != len(terms):
            raise DataError(f"BM25 counts have {counts.shape[1]} columns for {len(terms)} terms")
        index = cls(k1=k1, b=b)
        index.vocabulary = {term: i for i, term in enumerate(terms)}
        index._counts = counts
        index._reweight()
        return index

    @property
    def counts(self) -> Any:
        """The documents x terms count matrix (CSR; do not modify)."""
        return self._counts

    @property
    def postings(self) -> int:
        """(document, term) pairs with a count: the size of the inverted index."""
        return int(self._counts.nnz)

    def copy(self) -> Bm25Index:
        """An independent copy (changing one leaves the other as it was)."""
        other = Bm25Index(k1=self.k1, b=self.b)
        other.vocabulary = dict(self.vocabulary)
        other.tokenizer_version = self.tokenizer_version
        other._counts = self._counts.copy()
        other._reweight()
        return other

    def __len__(self) -> int:
        return int(self._counts.shape[0])

    def _count_rows(self, token_lists: Sequence[Sequence[str]]) -> Any:
        sparse = _sparse()
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for row, tokens in enumerate(token_lists):
            for term, count in Counter(tokens).items():
                col = self.vocabulary.setdefault(term, len(self.vocabulary))
                rows.append(row)
                cols.append(col)
                vals.append(float(count))
        shape = (len(token_lists), len(self.vocabulary))
        return sparse.csr_matrix(
            (np.asarray(vals, dtype=np.float32), (rows, cols)), shape=shape, dtype=np.float32
        )

    def add(self, token_lists: Sequence[Sequence[str]]) -> list[int]:
        """Append documents; returns their numbers. Weights of all documents are
        recomputed (document frequencies and average length change)."""
        sparse = _sparse()
        first = len(self)
        new = self._count_rows(token_lists)
        old = self._counts
        if old.shape[1] < new.shape[1]:
            old = sparse.csr_matrix(
                (old.data, old.indices, old.indptr), shape=(old.shape[0], new.shape[1])
            )
        self._counts = sparse.vstack([old, new], format="csr", dtype=np.float32)
        self._reweight()
        return list(range(first, len(self)))

    def changed(self, drop: Sequence[int], token_lists: Sequence[Sequence[str]]) -> Bm25Index:
        """A new index without documents ``drop`` and with ``token_lists`` appended
        (this one is not modified); the weights are recomputed once."""
        other = Bm25Index(k1=self.k1, b=self.b)
        other.vocabulary = dict(self.vocabulary)
        other.tokenizer_version = self.tokenizer_version
        counts = self._counts
        if len(drop):
            keep = np.ones(len(self), dtype=bool)
            keep[np.asarray(list(drop), dtype=np.int64)] = False
            counts = counts[keep]
        if len(token_lists):
            sparse = _sparse()
            new = other._count_rows(token_lists)
            if counts.shape[1] < new.shape[1]:
                counts = sparse.csr_matrix(
                    (counts.data, counts.indices, counts.indptr),
                    shape=(counts.shape[0], new.shape[1]),
                )
            counts = sparse.vstack([counts, new], format="csr", dtype=np.float32)
        other._counts = counts if counts is not self._counts else counts.copy()
        other._reweight()
        return other

    def remove(self, numbers: Sequence[int]) -> None:
        """Drop documents by number; the others are renumbered in order."""
        drop = np.zeros(len(self), dtype=bool)
        numbers = np.asarray(list(numbers), dtype=np.int64)
        if numbers.size and (numbers.min() < 0 or numbers.max() >= len(self)):
            raise IndexError(f"document numbers must be in [0, {len(self)}), got {numbers}")
        drop[numbers] = True
        self._counts = self._counts[~drop]
        self._reweight()

    def _reweight(self) -> None:
        counts = self._counts
        n_docs = counts.shape[0]
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        avg = float(lengths.mean()) if n_docs and lengths.mean() > 0 else 1.0
        df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)
        self._idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        weights = counts.copy()
        tf = weights.data
        row_of = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
        norm = self.k1 * (1.0 - self.b + self.b * lengths[row_of] / avg)
        weights.data = (self._idf[weights.indices] * tf * (self.k1 + 1.0) / (tf + norm)).astype(
            np.float32
        )
        weights = weights.tocsc()
        weights.sort_indices()
        self._weights = weights
        # each term's highest contribution: the bound top-k pruning skips documents by
        col_max = np.zeros(weights.shape[1], dtype=np.float32)
        filled = np.flatnonzero(np.diff(weights.indptr))
        if filled.size:
            col_max[filled] = np.maximum.reduceat(weights.data, weights.indptr[filled])
        self._col_max = col_max

    # ------------------------------------------------------------ querying

    def _query_vector(self, query_tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        counts = Counter(t for t in query_tokens if t in self.vocabulary)
        cols = np.fromiter((self.vocabulary[t] for t in counts), dtype=np.int64)
        return cols, np.fromiter(counts.values(), dtype=np.float32, count=len(counts))

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query (0 where no term matches)."""
        cols, weights = self._query_vector(query_tokens)
        if cols.size == 0 or len(self) == 0:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self._weights[:, cols] @ weights).ravel()

    def search(self, query_tokens: Sequence[str], k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best (document number, score) pairs with a score above 0, best first
        (ties by number)."""
        scores = self.scores(query_tokens)
        hits = np.flatnonzero(scores > 0)
        if hits.size > k:
            top = np.argpartition(-scores[hits], k - 1)[:k]
            hits = hits[top]
        order = np.lexsort((hits, -scores[hits]))
        return [(int(hits[i]), float(scores[hits[i]])) for i in order]

    def idf_of(self, tokens: Sequence[str]) -> np.ndarray:
        """The inverse document frequency of each token (0.0 for a token no document has)."""
        return np.array(
            [float(self._idf[self.vocabulary[t]]) if t in self.vocabulary else 0.0 for t in tokens],
            dtype=np.float64,
        )

    def scores_for(self, query_tokens: Sequence[str], numbers: Sequence[int]) -> np.ndarray:
        """BM25 scores of the given documents only: each query term's posting list is
        searched for them (binary search), so the cost does not grow with the index."""
        numbers = np.asarray(list(numbers), dtype=np.int64)
        out = np.zeros(numbers.size, dtype=np.float32)
        if numbers.size == 0:
            return out
        cols, weights = self._query_vector(query_tokens)
        for col, weight in zip(cols, weights, strict=True):
            self._add_term(out, numbers, int(col), float(weight))
        return out

    def _posting(self, col: int) -> tuple[np.ndarray, np.ndarray]:
        """(document numbers, ascending; their weights) of one term."""
        start, end = self._weights.indptr[col], self._weights.indptr[col + 1]
        return self._weights.indices[start:end], self._weights.data[start:end]

    def _add_term(self, out: np.ndarray, numbers: np.ndarray, col: int, weight: float) -> None:
        """Add one term's contribution to the scores ``out`` of documents ``numbers``."""
        docs, values = self._posting(col)
        if docs.size == 0:
            return
        at = np.minimum(np.searchsorted(docs, numbers), docs.size - 1)
        found = docs[at] == numbers
        out[found] += weight * values[at[found]]

    def top(self, query_tokens: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (document numbers, scores) with a score above 0, best first,
        ties by number: the same as ranking ``scores`` but without scoring every document.

        Max-score pruning over the posting lists: terms are taken in order of their
        highest possible contribution; once the contributions still possible from the
        terms not taken sum to less than the k-th best score so far, no document outside
        those already found can reach the top k, and the remaining terms only add to the
        documents found (looked up in their posting lists). Common, low-weight terms
        (long posting lists) are thus rarely read in full.
        """
        empty = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        cols, weights = self._query_vector(query_tokens)
        if cols.size == 0 or len(self) == 0 or k <= 0:
            return empty
        bounds = weights * self._col_max[cols]
        order = np.argsort(-bounds, kind="stable")
        left = float(bounds.sum())
        docs = np.zeros(0, dtype=np.int64)
        scores = np.zeros(0, dtype=np.float32)
        taken = 0
        while taken < order.size:
            col, weight = int(cols[order[taken]]), float(weights[order[taken]])
            left -= float(bounds[order[taken]])
            taken += 1
            posting, values = self._posting(col)
            docs = np.concatenate([docs, posting.astype(np.int64)])
            scores = np.concatenate([scores, weight * values])
            docs, inverse = np.unique(docs, return_inverse=True)
            scores = np.bincount(inverse, weights=scores, minlength=docs.size).astype(np.float32)
            if docs.size >= k:
                kth = float(np.partition(scores, docs.size - k)[docs.size - k])
                if left < kth:
                    break
        for i in order[taken:]:
            self._add_term(scores, docs, int(cols[i]), float(weights[i]))
        keep = scores > 0
        docs, scores = docs[keep], scores[keep]
        if docs.size > k:
            kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
            part = np.flatnonzero(scores >= kth)
            docs, scores = docs[part], scores[part]
        best = np.lexsort((docs, -scores))[:k]
        return docs[best], scores[best]

    # ------------------------------------------------------------ persistence

    def to_bytes(self) -> tuple[bytes, str]:
        """The index as (npz bytes of the term counts, JSON of parameters and vocabulary)."""
        buffer = io.BytesIO()
        _sparse().save_npz(buffer, self._counts, compressed=False)
        terms = [""] * len(self.vocabulary)
        for term, col in self.vocabulary.items():
            terms[col] = term
        meta = {
            "k1": self.k1,
            "b": self.b,
            "documents": len(self),
            "tokenizer_version": TOKENIZER_VERSION,
            "terms": terms,
        }
        return buffer.getvalue(), json.dumps(meta, ensure_ascii=False)

    def save(self, directory: Path, name: str = "bm25") -> None:
        """Write ``name.npz`` and ``name.json`` into ``directory``, each atomically."""
        from aiflywheel.files import write_bytes_atomic, write_text_atomic

        counts, meta = self.to_bytes()
        write_bytes_atomic(directory / f"{name}.npz", counts)
        write_text_atomic(directory / f"{name}.json", meta)

    @classmethod
    def load(cls, directory: Path, name: str = "bm25") -> Bm25Index:
        """Read an index written by ``save``; ``DataError`` when the files do not match."""
        meta_path, counts_path = directory / f"{name}.json", directory / f"{name}.npz"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            counts = _sparse().load_npz(counts_path).tocsr().astype(np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"cannot read the BM25 index in {directory}: {exc}") from None
        if counts.shape != (meta["documents"], len(meta["terms"])):
            raise DataError(
                f"BM25 index in {directory} is inconsistent: counts {counts.shape}, "
                f"expected ({meta['documents']}, {len(meta['terms'])})"
            )
        index = cls(k1=float(meta["k1"]), b=float(meta["b"]))
        index.vocabulary = {term: i for i, term in enumerate(meta["terms"])}
        index.tokenizer_version = int(meta.get("tokenizer_version", 0))
        index._counts = counts
        index._reweight()
        return index
