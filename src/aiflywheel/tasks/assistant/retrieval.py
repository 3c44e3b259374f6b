"""Hybrid retrieval: BM25 and dense candidates fused into one ranking.

``HybridRetriever.search`` takes the ``candidates`` best chunks of each retriever and
fuses them, by default with relative score fusion (``fusion="relative"``): over the
union of the candidates, the cosine similarities are scaled to [0, 1] (min-max) and the
BM25 scores divided by the best one (0 means no query term matched), and a chunk's score
is ``(1 - bm25_weight) * dense + bm25_weight * bm25``. Unlike rank fusion it keeps how
far apart the scores are: a chunk the dense retriever puts far ahead of the rest stays
ahead when BM25 only matched a few incidental words of a long question, and an exact
term match (a product name, "2FA", "专票") still lifts a chunk. ``fusion="rrf"`` is
reciprocal rank fusion instead: the sum over the lists a chunk appears in of
``1 / (rrf_k + rank)``, ranks 1-based.

On the shipped help center's 159 answerable evaluation questions (e5-small), rank fusion
did no better than dense retrieval alone (hit@5 0.893 for both, hit@1 0.572 against
0.635): with 50 candidates per list, chunks that both retrievers rank in the middle beat
the dense retriever's clear first choice on long, chatty questions. Relative score
fusion with ``bm25_weight`` 0.3 gives hit@5 0.925 and hit@1 0.654 there, and hit@5
stays between 0.906 and 0.925 for weights 0.1 to 0.4.
``flywheel eval`` prints the three modes side by side.

Each retriever finds its candidates without scoring every chunk: BM25 with max-score
pruning over its posting lists (``Bm25Index.top``), the dense side with the
``vectors`` search (exact, or an IVF index at scale, see ``vector_search``); the fused
scores are then computed exactly for the candidates alone.

Every hit carries both raw scores whatever the mode: ``dense_score`` is the cosine of
query and chunk (computed for BM25-only candidates too) and ``bm25_score`` is 0.0 when
no query term matched, so the answer policy can calibrate its thresholds on them.
Ranks are ``None`` for a retriever that did not put the chunk among its candidates
(or did not run: ``mode="bm25"`` runs no dense ranking and ``mode="dense"`` no BM25
ranking, but both scores are still filled in).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from aiflywheel.errors import ModelError
from aiflywheel.tasks.assistant.bm25 import Bm25Index, bm25_tokens
from aiflywheel.tasks.assistant.encoders import TextEncoder
from aiflywheel.tasks.assistant.types import Chunk, RetrievalHit
from aiflywheel.tasks.assistant.vector_search import ExactSearch, VectorSearch, top_rows

SearchMode = Literal["hybrid", "bm25", "dense"]
Fusion = Literal["relative", "rrf"]
MODES: tuple[str, ...] = ("hybrid", "bm25", "dense")
FUSIONS: tuple[str, ...] = ("relative", "rrf")
DEFAULT_RRF_K = 60
DEFAULT_FUSION = "relative"
DEFAULT_BM25_WEIGHT = 0.3


@dataclass(frozen=True)
class FusionSettings:
    """How hybrid search fuses BM25 and dense results (the recipe's ``assistant.fusion``,
    ``bm25_weight`` and ``rrf_k``); passed to ``HybridRetriever`` as keyword arguments."""

    fusion: Fusion = DEFAULT_FUSION
    bm25_weight: float = DEFAULT_BM25_WEIGHT
    rrf_k: int = DEFAULT_RRF_K

    def options(self) -> dict[str, object]:
        return {"fusion": self.fusion, "bm25_weight": self.bm25_weight, "rrf_k": self.rrf_k}


def index_text(chunk: Chunk) -> str:
    """What is indexed for a chunk, by BM25 and the encoder: its passage (a FAQ's
    question and answer, a document chunk with its heading)."""
    return chunk.passage


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, k: int = DEFAULT_RRF_K
) -> list[tuple[int, float]]:
    """Fuse ranked lists of item numbers: ``score(d) = sum 1 / (k + rank_i(d))``.

    Returns (item, score) pairs, best first, ties broken by the item's best rank and
    then its number.
    """
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            best[item] = min(best.get(item, rank), rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], best[pair[0]], pair[0]))


def relative_score_fusion(
    items: Sequence[int],
    dense: np.ndarray,
    bm25: np.ndarray,
    *,
    bm25_weight: float = DEFAULT_BM25_WEIGHT,
) -> list[tuple[int, float]]:
    """Fuse the candidate ``items`` by their scores: ``dense`` (cosines) min-max scaled
    over the items, ``bm25`` divided by its best value over the items (all 0 when no
    term matched), mixed as ``(1 - bm25_weight) * dense + bm25_weight * bm25``.

    ``dense`` and ``bm25`` hold every chunk's score (indexed by item number). Returns
    (item, score) pairs, best first, ties broken by the item's number.
    """
    if not 0.0 <= bm25_weight <= 1.0:
        raise ValueError(f"bm25_weight must be in [0, 1], got {bm25_weight}")
    picked = np.asarray(sorted(set(items)), dtype=np.int64)
    if picked.size == 0:
        return []
    cos = dense[picked].astype(np.float64)
    spread = float(cos.max() - cos.min())
    cos = (cos - cos.min()) / spread if spread > 1e-12 else np.ones_like(cos)
    lexical = np.maximum(bm25[picked].astype(np.float64), 0.0)
    best = float(lexical.max())
    lexical = lexical / best if best > 0 else lexical
    fused = (1.0 - bm25_weight) * cos + bm25_weight * lexical
    order = np.lexsort((picked, -fused))
    return [(int(picked[i]), float(fused[i])) for i in order]


_top = top_rows  # kept for callers of the old name


class HybridRetriever:
    """Searches chunks with BM25, dense vectors, or both fused (see the module docstring).

    ``embeddings`` row i belongs to ``chunks[i]`` and so does BM25 document i. Without
    an encoder (and embeddings) only ``mode="bm25"`` works. Query vectors are cached
    for the last ``query_cache`` distinct queries (customers repeat questions).
    """

    def __init__(
        self,
        chunks: Sequence[Chunk],
        bm25: Bm25Index,
        embeddings: np.ndarray | None,
        encoder: TextEncoder | None,
        *,
        rrf_k: int = DEFAULT_RRF_K,
        fusion: Fusion = DEFAULT_FUSION,
        bm25_weight: float = DEFAULT_BM25_WEIGHT,
        query_cache: int = 256,
        vectors: VectorSearch | None = None,
    ) -> None:
        """Assemble a retriever over already built parts (checked for matching sizes).
        ``vectors`` finds the dense candidates (default: exact search over
        ``embeddings``; an ``IvfSearch`` over the same rows at scale)."""
        if len(bm25) != len(chunks):
            raise ModelError(f"BM25 index has {len(bm25)} documents for {len(chunks)} chunks")
        if embeddings is not None and embeddings.shape[0] != len(chunks):
            raise ModelError(f"embeddings have {embeddings.shape[0]} rows for {len(chunks)} chunks")
        if (
            embeddings is not None
            and encoder is not None
            and embeddings.shape[0]
            and embeddings.shape[1] != encoder.dim
        ):
            raise ModelError(
                f"embeddings have dimension {embeddings.shape[1]}, encoder {encoder.name!r} "
                f"gives {encoder.dim}"
            )
        if rrf_k <= 0:
            raise ValueError(f"rrf_k must be positive, got {rrf_k}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if not 0.0 <= bm25_weight <= 1.0:
            raise ValueError(f"bm25_weight must be in [0, 1], got {bm25_weight}")
        self.chunks = list(chunks)
        self.bm25 = bm25
        self.embeddings = embeddings
        self.vectors: VectorSearch | None = None
        if embeddings is not None:
            self.vectors = vectors if vectors is not None else ExactSearch(embeddings)
        self.encoder = encoder
        self.rrf_k = rrf_k
        self.fusion = fusion
        self.bm25_weight = bm25_weight
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = query_cache
        self._cache_lock = threading.Lock()

    @property
    def has_dense(self) -> bool:
        return self.encoder is not None and self.embeddings is not None

    def adopt_query_cache(self, other: HybridRetriever) -> None:
        """Reuse ``other``'s cached query vectors (same encoder, e.g. after the index
        changed)."""
        same = other.encoder is not None and self.encoder is not None
        if same and other.encoder.name == self.encoder.name:
            self._cache, self._cache_lock = other._cache, other._cache_lock

    def encode_query(self, query: str) -> np.ndarray:
        """The query's unit vector (cached by exact text)."""
        if self.encoder is None:
            raise ModelError("this retriever has no encoder; only mode='bm25' is available")
        with self._cache_lock:
            cached = self._cache.get(query)
            if cached is not None:
                self._cache.move_to_end(query)
                return cached
        vector = np.asarray(self.encoder.encode_queries([query])[0], dtype=np.float32)
        if self._cache_size:
            with self._cache_lock:
                self._cache[query] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vector

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: SearchMode = "hybrid",
        candidates: int = 50,
        query_vector: np.ndarray | None = None,
    ) -> list[RetrievalHit]:
        """The ``k`` best chunks for ``query``, best first.

        ``candidates`` is how many each retriever contributes to the fusion.
        ``query_vector`` (from ``encode_query``) skips encoding, e.g. when comparing modes.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if k <= 0 or not query.strip() or not self.chunks:
            return []
        if mode != "bm25" and not self.has_dense:
            raise ModelError(f"mode {mode!r} needs an encoder and embeddings; use mode='bm25'")
        candidates = max(candidates, k)

        tokens = bm25_tokens(query)
        vector = None
        if self.has_dense:
            vector = query_vector if query_vector is not None else self.encode_query(query)
            vector = np.asarray(vector, dtype=np.float32).ravel()

        bm25_ranked: list[int] = []
        dense_ranked: list[int] = []
        if mode != "dense":
            bm25_ranked = [int(i) for i in self.bm25.top(tokens, candidates)[0]]
        if mode != "bm25":
            dense_ranked = [int(i) for i in self.vectors.search(vector, candidates)]

        # both raw scores of every candidate, exact (an approximate vector index only
        # chooses the dense candidates)
        union = np.asarray(sorted(set(bm25_ranked) | set(dense_ranked)), dtype=np.int64)
        position = {int(item): n for n, item in enumerate(union)}
        bm25_scores = self.bm25.scores_for(tokens, union)
        cosines = None if vector is None else self.embeddings[union] @ vector

        if mode == "hybrid" and self.fusion == "rrf":
            fused = reciprocal_rank_fusion([bm25_ranked, dense_ranked], k=self.rrf_k)[:k]
        elif mode == "hybrid":
            assert cosines is not None
            local = relative_score_fusion(
                range(union.size), cosines, bm25_scores, bm25_weight=self.bm25_weight
            )[:k]
            fused = [(int(union[n]), score) for n, score in local]
        elif mode == "bm25":
            fused = [(i, float(bm25_scores[position[i]])) for i in bm25_ranked[:k]]
        else:
            assert cosines is not None
            fused = [(i, float(cosines[position[i]])) for i in dense_ranked[:k]]

        bm25_rank = {item: r for r, item in enumerate(bm25_ranked, start=1)}
        dense_rank = {item: r for r, item in enumerate(dense_ranked, start=1)}
        return [
            RetrievalHit(
                chunk=self.chunks[item],
                score=float(score),
                bm25_rank=bm25_rank.get(item),
                dense_rank=dense_rank.get(item),
                bm25_score=float(bm25_scores[position[item]]),
                dense_score=None if cosines is None else float(cosines[position[item]]),
            )
            for item, score in fused
        ]
