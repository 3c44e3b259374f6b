"""Per-prediction token attributions by occlusion.

A text is split into tokens (a Chinese word or an English word each, punctuation kept
apart; Chinese is grouped into words with jieba, from the ``assistant`` extra, and into
single characters when jieba is not installed); each token is removed in turn and the
drop in the log-odds of the explained label is that token's score (log-odds, not
probability, so that a confident model's near-1.0 probabilities still show which tokens
matter). Positive scores push toward the label, negative ones away from it. It needs
only ``predict_proba``, so it explains every method alike (TF-IDF, frozen heads,
fine-tuned encoders), and all occluded variants go through the model in one batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from aiflywheel.errors import MissingExtraError, ModelError

_EPS = 1e-7


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


_TOKEN = re.compile(r"([\u3400-\u9fff\uf900-\ufaff]+)|[A-Za-z0-9_'’-]+|\S")


def split_tokens(text: str) -> list[tuple[int, int]]:
    """Spans of explainable tokens: one Chinese word (one Han character without jieba),
    one English word/number, or one symbol."""
    segment = _han_segmenter()
    spans: list[tuple[int, int]] = []
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        if match.group(1) is None:
            spans.append((start, end))
        elif segment is not None and end - start > 1:
            spans.extend((start + a, start + b) for _, a, b in segment(match.group(1)))
        else:
            spans.extend((i, i + 1) for i in range(start, end))
    return spans


def _han_segmenter():
    """jieba's word spans of a Han run, or None when jieba is not installed."""
    try:
        from aiflywheel.tasks.assistant.bm25 import jieba_module

        jieba = jieba_module()
    except (ImportError, MissingExtraError):
        return None
    return jieba.tokenize


def explain_prediction(
    model, text: str, *, label: str | None = None, max_tokens: int = 128
) -> list[tuple[str, float]]:
    """``[(token, score), ...]`` for ``text`` in order, whitespace kept as zero-score tokens.

    ``label`` defaults to the predicted one. Texts longer than ``max_tokens`` explain
    their first ``max_tokens`` tokens (the rest score 0).
    """
    if not isinstance(text, str) or not text.strip():
        raise ModelError("explain needs a non-empty text")
    labels = list(model.labels)
    base = model.predict_proba([text])[0]
    target = labels.index(label) if label is not None else int(base.argmax())
    if label is not None and label not in labels:
        raise ModelError(f"unknown label {label!r}; labels: {', '.join(labels)}")
    spans = split_tokens(text)
    scored = spans[:max_tokens]
    variants = [text[:start] + text[end:] for start, end in scored]
    variants = [v if v.strip() else " " for v in variants]
    drops = []
    if variants:
        occluded = model.predict_proba(variants)[:, target]
        drops = _log_odds(np.array([base[target]])) - _log_odds(occluded)
    scores = dict(zip(scored, (float(d) for d in drops), strict=True))
    pieces: list[tuple[str, float]] = []
    cursor = 0
    for span in spans:
        start, end = span
        if start > cursor:
            pieces.append((text[cursor:start], 0.0))
        pieces.append((text[start:end], round(scores.get(span, 0.0), 4)))
        cursor = end
    if cursor < len(text):
        pieces.append((text[cursor:], 0.0))
    return pieces


def top_tokens(pieces: Sequence[tuple[str, float]], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` tokens that push hardest toward the label."""
    return sorted((p for p in pieces if p[0].strip()), key=lambda p: -p[1])[:k]
