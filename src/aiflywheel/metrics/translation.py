"""chrF and BLEU (sacrebleu) of generated texts, with bootstrap confidence intervals.

Corpus scores are resampled the way sacrebleu's own significance test does it: each
sentence's sufficient statistics are extracted once, and a resample sums the statistics
of the drawn sentences and scores the sum (so a resample costs a sum, not a re-tokenize).
BLEU tokenizes Chinese targets with sacrebleu's ``zh`` tokenizer, Japanese and Korean by
character, others with ``13a``; chrF works on characters in every language.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aiflywheel.errors import DataError

METRICS = ("chrF", "BLEU")
SACREBLEU = "pip install 'aiflywheel[seq2seq]'"


def _metric(name: str, target_language: str) -> Any:
    from aiflywheel.errors import require_module

    require_module("sacrebleu", what="translation metrics", install=SACREBLEU)
    from sacrebleu.metrics import BLEU, CHRF

    if name == "chrF":
        return CHRF()
    tokenize = "zh" if target_language.startswith("zh") else "13a"
    if target_language.startswith(("ja", "ko")):
        tokenize = "char"
    return BLEU(tokenize=tokenize, effective_order=True)


def _stats(metric: Any, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    if len(hypotheses) != len(references):
        raise DataError(
            f"{len(hypotheses)} outputs for {len(references)} references; they must pair up"
        )
    if not references:
        raise DataError("no references to score against")
    return np.asarray(
        metric._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.float64
    )


def _score(metric: Any, stats: np.ndarray) -> float:
    return float(metric._compute_score_from_stats(list(stats.sum(axis=0))).score)


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    target_language: str,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{"chrF": {"score", "ci"}, "BLEU": {...}}``: corpus scores (0-100), 95% CIs."""
    out = {}
    draws = _draws(len(references), resamples, seed)
    for name in METRICS:
        metric = _metric(name, target_language)
        stats = _stats(metric, hypotheses, references)
        samples = np.array([_score(metric, stats[row]) for row in draws])
        lo, hi = np.percentile(samples, [2.5, 97.5])
        out[name] = {"score": round(_score(metric, stats), 3), "ci": [round(lo, 3), round(hi, 3)]}
    return out


def sentence_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
    """chrF of each sentence on its own (for slices and the worst outputs)."""
    metric = _metric("chrF", "")
    stats = _stats(metric, hypotheses, references)
    return [round(_score(metric, stats[i : i + 1]), 3) for i in range(len(stats))]


def paired_bootstrap(
    candidate: Sequence[str],
    champion: Sequence[str],
    references: Sequence[str],
    *,
    metric: str = "chrF",
    target_language: str,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Candidate minus champion on the same resampled sentences: the difference of corpus
    ``metric`` (points), its 95% CI, and the share of resamples where the candidate wins."""
    scorer = _metric(metric, target_language)
    cand = _stats(scorer, candidate, references)
    champ = _stats(scorer, champion, references)
    draws = _draws(len(references), resamples, seed)
    diffs = np.array([_score(scorer, cand[row]) - _score(scorer, champ[row]) for row in draws])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "metric": metric,
        "candidate": round(_score(scorer, cand), 3),
        "champion": round(_score(scorer, champ), 3),
        "diff": round(_score(scorer, cand) - _score(scorer, champ), 3),
        "ci": [round(float(lo), 3), round(float(hi), 3)],
        "p_better": round(float((diffs > 0).mean()), 4),
        "resamples": resamples,
    }
