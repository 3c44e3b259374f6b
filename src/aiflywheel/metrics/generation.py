"""Metrics of generated text against references: chrF (sacrebleu), ROUGE-L (rouge-score
with a tokenizer that splits Chinese into characters), length and repetition; bootstrap
intervals of per-row means and of paired differences."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from aiflywheel.errors import require_module

METRICS_INSTALL = "pip install 'aiflywheel[generation]'"
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Words (lowercased) and single CJK characters."""
    return [t.lower() for t in _TOKEN.findall(text)]


class _Tokenizer:
    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (0-100)."""
    sacrebleu = require_module("sacrebleu", what="chrF", install=METRICS_INSTALL)
    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score)


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F-measure (0-100) over ``tokens``."""
    scorer_module = require_module(
        "rouge_score.rouge_scorer", what="ROUGE-L", install=METRICS_INSTALL
    )
    scorer = scorer_module.RougeScorer(["rougeL"], tokenizer=_Tokenizer())
    return 100.0 * float(scorer.score(reference, hypothesis)["rougeL"].fmeasure)


def repetition(text: str, n: int = 3) -> float:
    """Share of the text's n-grams that repeat an earlier one (0: none, ~1: a loop)."""
    toks = tokens(text)
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n over a set of texts: unique n-grams / all n-grams."""
    grams = [
        tuple(t[i : i + n]) for text in texts for t in [tokens(text)] for i in range(len(t) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_ci(
    values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_diff(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean of ``a - b`` on the same rows with its bootstrap interval."""
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return {"diff": None, "ci": None, "rows": 0}
    lo, hi = mean_ci(d, n_resamples=n_resamples, seed=seed)
    return {"diff": float(d.mean()), "ci": [lo, hi], "rows": int(d.size)}


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-row chrF, ROUGE-L, length (tokens) and repetition."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses and references must have the same length, got {len(hypotheses)} "
            f"and {len(references)}"
        )
    return {
        "chrf": [chrf(h, r) for h, r in zip(hypotheses, references, strict=True)],
        "rouge_l": [rouge_l(h, r) for h, r in zip(hypotheses, references, strict=True)],
        "length": [float(len(tokens(h))) for h in hypotheses],
        "repetition": [repetition(h) for h in hypotheses],
    }
