"""Evaluate a tuned generator against the untuned base model and the nearest-neighbour
response baseline on the held-out test rows, in one report.

- perplexity of the reference responses (tuned and base; the baseline has none);
- ``sampling.n`` samples per prompt (temperature, top-p, seed recorded) from the tuned and
  the base model, one response from the baseline; per prompt the mean chrF and ROUGE-L of
  its samples against the reference, length and repetition;
- each system's mean with a bootstrap 95% CI, the paired difference of chrF (tuned minus
  each baseline) with its CI, per language;
- a verdict per baseline: "beats" only when the difference's CI is above zero; otherwise
  the report says plainly that the model does not beat it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from aiflywheel.metrics.generation import distinct, mean_ci, paired_diff, text_scores
from aiflywheel.models.causal_lm import Sampling, TunedLM, perplexity
from aiflywheel.tasks.text_generation.baseline import NearestResponse
from aiflywheel.tasks.text_generation.config import GenerationConfig
from aiflywheel.tasks.text_generation.data import Row

SCORES = ("chrf", "rouge_l", "length", "repetition")


def sample_rows(lm: TunedLM, rows: list[Row], sampling: Sampling, n: int) -> list[list[str]]:
    """``n`` samples per row (the seed advances per row, so rows differ but reruns match)."""
    out = []
    for i, row in enumerate(rows):
        seed = None if sampling.seed is None else sampling.seed + i
        settings = Sampling(sampling.max_new_tokens, sampling.temperature, sampling.top_p, seed)
        out.append([text for text, _ in lm.generate(row.example, n=n, sampling=settings)])
    return out


def _system(
    name: str, samples: list[list[str]], rows: list[Row], resamples: int, seed: int
) -> dict[str, Any]:
    references = [r.example.response for r in rows]
    per_prompt: dict[str, list[float]] = {k: [] for k in SCORES}
    for texts, reference in zip(samples, references, strict=True):
        scores = text_scores(texts, [reference] * len(texts))
        for key in SCORES:
            per_prompt[key].append(sum(scores[key]) / len(scores[key]))
    summary: dict[str, Any] = {"name": name, "per_prompt": per_prompt}
    for key in SCORES:
        values = per_prompt[key]
        summary[key] = sum(values) / len(values) if values else None
        summary[f"{key}_ci"] = list(mean_ci(values, n_resamples=resamples, seed=seed))
    summary["distinct_2"] = distinct([t for texts in samples for t in texts])
    by_language: dict[str, list[float]] = defaultdict(list)
    for row, value in zip(rows, per_prompt["chrf"], strict=True):
        by_language[row.language].append(value)
    summary["chrf_by_language"] = {
        lang: {"rows": len(v), "chrf": sum(v) / len(v)} for lang, v in sorted(by_language.items())
    }
    summary["examples"] = [
        {"prompt": r.prompt_text, "reference": r.example.response, "samples": s}
        for r, s in list(zip(rows, samples, strict=True))[:5]
    ]
    return summary


def evaluate_generator(
    tuned: TunedLM,
    base: TunedLM,
    baseline: NearestResponse,
    test: list[Row],
    config: GenerationConfig,
    *,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The report's figures (see the module doc)."""
    started = time.perf_counter()
    examples = [r.example for r in test]
    ppl_tuned, _ = perplexity(
        tuned.model, tuned.tokenizer, examples, chat=tuned.chat, max_length=config.max_length
    )
    ppl_base, _ = perplexity(
        base.model, base.tokenizer, examples, chat=base.chat, max_length=config.max_length
    )
    rows = test[: config.sampling.max_prompts]
    s = config.sampling
    sampling = Sampling(s.max_new_tokens, s.temperature, s.top_p, s.seed)
    systems = {
        "model": _system("tuned", sample_rows(tuned, rows, sampling, s.n), rows, resamples, seed),
        "base": _system(
            f"untuned {base.base}", sample_rows(base, rows, sampling, s.n), rows, resamples, seed
        ),
        "nearest": _system(
            "nearest-neighbour response",
            [[t] for t in baseline.predict([r.prompt_text for r in rows])],
            rows,
            resamples,
            seed,
        ),
    }
    systems["model"]["perplexity"] = ppl_tuned
    systems["base"]["perplexity"] = ppl_base
    comparisons = {}
    for other in ("base", "nearest"):
        diff = paired_diff(
            systems["model"]["per_prompt"]["chrf"],
            systems[other]["per_prompt"]["chrf"],
            n_resamples=resamples,
            seed=seed,
        )
        lo = diff["ci"][0] if diff["ci"] else None
        hi = diff["ci"][1] if diff["ci"] else None
        if lo is not None and lo > 0:
            verdict = f"beats the {systems[other]['name']} on chrF"
        elif hi is not None and hi < 0:
            verdict = f"is worse than the {systems[other]['name']} on chrF"
        else:
            verdict = f"does not beat the {systems[other]['name']} on chrF (no clear difference)"
        comparisons[other] = {**diff, "beats": bool(lo is not None and lo > 0), "verdict": verdict}
    ppl_note = (
        f"held-out perplexity {ppl_tuned:.2f} vs {ppl_base:.2f} untuned"
        if math.isfinite(ppl_tuned) and math.isfinite(ppl_base)
        else "perplexity not measured"
    )
    verdict = (
        f"The tuned model {comparisons['base']['verdict']} and "
        f"{comparisons['nearest']['verdict']}; {ppl_note}."
    )
    return {
        "test_rows": len(test),
        "sampled_prompts": len(rows),
        "sampling": {**sampling.to_json(), "n": s.n},
        "systems": systems,
        "comparisons": comparisons,
        "verdict": verdict,
        "seconds": round(time.perf_counter() - started, 2),
    }


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """The version's metrics row: chrF with CI, perplexity, both baselines."""
    model = metrics["systems"]["model"]
    base = metrics["systems"]["base"]
    nearest = metrics["systems"]["nearest"]
    return {
        "chrf": model["chrf"],
        "chrf_ci": model["chrf_ci"],
        "rouge_l": model["rouge_l"],
        "perplexity": model["perplexity"],
        "base_perplexity": base["perplexity"],
        "base_chrf": base["chrf"],
        "baseline_name": "nearest-neighbour",
        "baseline_chrf": nearest["chrf"],
        "beats_baseline": metrics["comparisons"]["nearest"]["beats"],
        "beats_base_model": metrics["comparisons"]["base"]["beats"],
        "test_rows": metrics["test_rows"],
        "verdict": metrics["verdict"],
    }
