"""A learned answerability judge and reranker for the assistant (``assistant.judge``).

``FeatureJudge.score(question, chunks)`` is the probability that each chunk answers the
question. The assistant's policy reorders its top hits by it and takes the best
probability as its confidence (the handoff threshold is calibrated on that score).

The model is a logistic regression over features of one (question, retrieved chunk)
pair in the context of the whole hit list (``FEATURES``): the dense cosine, its gap to
the best hit and the best cosine, the BM25 score, the share of the question's words the
chunk has, the share the knowledge base has at all (out-of-scope questions use words it
lacks), the overlap with the FAQ question or section heading, and the hit's position.
It trains in seconds on the pairs ``judge_pairs.build_judge_pairs`` makes offline from
the knowledge base (and accepted feedback, in ``flywheel retrain``) and adds about a
millisecond per question: the features reuse the scores retrieval already computed.
(Numbers found, language match, chunk kind, IDF-weighted coverage and question length
were measured too and left out: with them the judge's AUC on the calibration half of
the shipped evaluation set fell from 0.83 to 0.79-0.81.)

Why not a fine-tuned e5 cross-encoder (not built): e5-small costs ~2.3 s per training
step on these CPUs (batch 16, length 64; the project's MODELS.md), so the few hundred
steps a cross-encoder needs would take longer than ``flywheel train`` should, and it
would run 12 layers over every (question, passage) pair at answer time.

Saved as ``judge.json`` (kind, feature names, training summary) and
``judge.safetensors`` (weights, intercept, feature means and scales); no pickle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiflywheel.errors import DataError, ModelError, NotFoundError
from aiflywheel.files import write_arrays_atomic, write_json_atomic
from aiflywheel.tasks.assistant.bm25 import bm25_tokens
from aiflywheel.tasks.assistant.types import Chunk, RetrievalHit

if TYPE_CHECKING:
    from aiflywheel.tasks.assistant.judge_pairs import JudgeQuery
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex

JUDGE_JSON = "judge.json"
JUDGE_WEIGHTS = "judge.safetensors"
JUDGE_KIND = "features"
JUDGE_FORMAT = 1

FEATURES: tuple[str, ...] = (
    "cosine",
    "cosine_gap_to_best",
    "best_cosine",
    "bm25_log",
    "token_coverage",
    "kb_known_share",
    "title_overlap",
    "inverse_position",
)


def _overlap(tokens: set[str], text: str) -> float:
    """Share of ``tokens`` found among the BM25 tokens of ``text``."""
    if not tokens or not text:
        return 0.0
    have = set(bm25_tokens(text))
    return sum(t in have for t in tokens) / len(tokens)


def hit_features(
    question: str,
    hits: Sequence[RetrievalHit],
    index: KnowledgeIndex,
    *,
    known_share: float | None = None,
) -> np.ndarray:
    """The ``FEATURES`` matrix of ``hits`` (one row per hit, in the given order) for
    ``question``; the hits' ``dense_score``/``bm25_score`` come from retrieval
    (``judge_pairs.hits_for`` fills them in for chunks retrieval did not return).

    ``known_share`` overrides the share of the question's words the knowledge base has
    at all (training computes it as if the hidden chunks were not there)."""
    rows = np.zeros((len(hits), len(FEATURES)), dtype=np.float64)
    if not hits:
        return rows
    tokens = set(bm25_tokens(question))
    if known_share is None:
        # 1 when the knowledge base has every word of the question, lower when the
        # question is about something it never mentions
        vocabulary = index.retriever().bm25.vocabulary
        known_share = sum(t in vocabulary for t in tokens) / len(tokens) if tokens else 0.0
    cosines = np.array([h.dense_score or 0.0 for h in hits], dtype=np.float64)
    best_cos = float(cosines.max())
    for i, hit in enumerate(hits):
        chunk = hit.chunk
        title = chunk.text if chunk.kind == "faq" else chunk.title
        rows[i] = (
            cosines[i],
            cosines[i] - best_cos,
            best_cos,
            math.log1p(max(hit.bm25_score or 0.0, 0.0)),
            _overlap(tokens, chunk.passage),
            known_share,
            _overlap(tokens, title),
            1.0 / (i + 1),
        )
    return rows


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iterations: int = 50
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (the intercept is not
    penalised); classes are weighted to balance. Returns (weights, intercept)."""
    n, d = x.shape
    positives = float(y.sum())
    if positives == 0 or positives == n:
        raise DataError(
            f"judge training needs both answering and non-answering pairs, got {int(positives)} "
            f"of {n} answering"
        )
    sample = np.where(y > 0, n / (2 * positives), n / (2 * (n - positives)))
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (sample * (p - y)) + penalty * theta
        hessian = (design * (sample * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian + 1e-9 * np.eye(d + 1), gradient)
        theta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (ties count half); None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(labels, dtype=bool)
    pos, neg = s[t], s[~t]
    if not pos.size or not neg.size:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


class FeatureJudge:
    """The learned judge over ``FEATURES`` (see the module doc).

    Bound to a ``KnowledgeIndex`` (for the BM25 vocabulary and, in ``score``, the
    chunks' stored embeddings); ``fit`` / ``score`` / ``save`` / ``load``.
    """

    kind = JUDGE_KIND

    def __init__(
        self, index: KnowledgeIndex | None = None, *, l2: float = 1.0, reorder: bool = True
    ) -> None:
        self.index = index
        self.l2 = l2
        self.reorder = reorder
        self.weights: np.ndarray | None = None
        self.intercept = 0.0
        self.mean = np.zeros(len(FEATURES))
        self.scale = np.ones(len(FEATURES))
        self.summary: dict[str, Any] = {}

    # -- training ---------------------------------------------------------------------
    def fit(self, pairs: Sequence[JudgeQuery]) -> FeatureJudge:
        """Train on ``pairs`` (questions with the chunks that answer them; see
        ``judge_pairs``): each question's hit list, as retrieval returns it with the
        listed chunks added, gives one labelled row per hit."""
        from aiflywheel.tasks.assistant.judge_pairs import training_rows

        index = self._require_index()
        x, y, origins = training_rows(pairs, index)
        if not len(y):
            raise DataError("judge training got no pairs; the knowledge base has no chunks?")
        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 1e-9, scale, 1.0)
        self.weights, self.intercept = fit_logistic((x - self.mean) / self.scale, y, l2=self.l2)
        train_scores = self._probabilities(x)
        self.summary = {
            "questions": len(pairs),
            "rows": len(y),
            "answering_rows": int(y.sum()),
            "origins": {o: origins.count(o) for o in sorted(set(origins))},
            "train_auc": roc_auc(train_scores, y > 0),
        }
        return self

    # -- scoring ----------------------------------------------------------------------
    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise ModelError("the judge is not trained; call fit() or load() first")
        return _sigmoid(((x - self.mean) / self.scale) @ self.weights + self.intercept)

    def score_hits(self, question: str, hits: Sequence[RetrievalHit]) -> np.ndarray:
        """The probability that each hit answers ``question`` (hits in retrieval order,
        with their scores)."""
        if not hits:
            return np.zeros(0)
        return self._probabilities(hit_features(question, hits, self._require_index()))

    def score(self, question: str, chunks: Sequence[Chunk]) -> np.ndarray:
        """The probability that each chunk answers ``question``; the chunks are taken in
        the given order as a hit list (their cosine and BM25 scores computed here)."""
        from aiflywheel.tasks.assistant.judge_pairs import hits_for

        index = self._require_index()
        return self.score_hits(question, hits_for(question, list(chunks), index))

    def rerank(
        self, question: str, hits: Sequence[RetrievalHit]
    ) -> tuple[list[RetrievalHit], np.ndarray]:
        """``hits`` ordered by judge probability (stable; kept in retrieval order when
        ``reorder`` is off), with their probabilities."""
        probabilities = self.score_hits(question, hits)
        if not self.reorder:
            return list(hits), probabilities
        order = sorted(range(len(hits)), key=lambda i: (-probabilities[i], i))
        return [hits[i] for i in order], probabilities[order]

    # -- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        if self.weights is None:
            raise ModelError("the judge is not trained; nothing to save")
        directory = Path(directory)
        write_arrays_atomic(
            directory / JUDGE_WEIGHTS,
            {
                "weights": self.weights.astype(np.float64),
                "intercept": np.array([self.intercept], dtype=np.float64),
                "mean": self.mean.astype(np.float64),
                "scale": self.scale.astype(np.float64),
            },
        )
        write_json_atomic(
            directory / JUDGE_JSON,
            {
                "kind": self.kind,
                "format": JUDGE_FORMAT,
                "features": list(FEATURES),
                "l2": self.l2,
                "summary": self.summary,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path, index: KnowledgeIndex | None = None) -> FeatureJudge:
        from safetensors.numpy import load_file

        directory = Path(directory)
        meta_path, weights_path = directory / JUDGE_JSON, directory / JUDGE_WEIGHTS
        if not meta_path.is_file() or not weights_path.is_file():
            raise NotFoundError(
                f"{directory} holds no judge ({JUDGE_JSON} and {JUDGE_WEIGHTS} expected)"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("kind") != JUDGE_KIND or meta.get("features") != list(FEATURES):
            raise ModelError(
                f"{meta_path}: judge kind {meta.get('kind')!r} with features "
                f"{meta.get('features')!r}; this version reads kind {JUDGE_KIND!r} with "
                f"{len(FEATURES)} features {', '.join(FEATURES[:3])}, ..."
            )
        arrays = load_file(str(weights_path))
        judge = cls(index, l2=float(meta.get("l2", 1.0)))
        judge.weights = arrays["weights"]
        judge.intercept = float(arrays["intercept"][0])
        judge.mean, judge.scale = arrays["mean"], arrays["scale"]
        judge.summary = meta.get("summary", {})
        return judge

    def _require_index(self) -> KnowledgeIndex:
        if self.index is None:
            raise ModelError("the judge is not bound to a knowledge index")
        return self.index


__all__ = [
    "FEATURES",
    "FeatureJudge",
    "JUDGE_JSON",
    "JUDGE_WEIGHTS",
    "fit_logistic",
    "hit_features",
    "roc_auc",
]
