"""The translator against the copy and dictionary baselines on the same pairs: chrF and
BLEU with bootstrap CIs, a paired bootstrap of chrF against the stronger baseline, and a
verdict that says plainly when the model does not win."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiflywheel.metrics.translation import corpus_scores, paired_bootstrap, sentence_chrf
from aiflywheel.tasks.text_to_text.data import Pair


def score_outputs(
    outputs: dict[str, list[str]],
    pairs: Sequence[Pair],
    *,
    target_language: str,
    resamples: int,
    seed: int,
    model_name: str,
    examples: int = 8,
) -> dict[str, Any]:
    """Scores of every system in ``outputs`` (name -> outputs) on ``pairs``; the model
    (``model_name``) compared with the stronger baseline on chrF."""
    references = [p.target for p in pairs]
    systems = {
        name: corpus_scores(
            hyp, references, target_language=target_language, resamples=resamples, seed=seed
        )
        for name, hyp in outputs.items()
    }
    baselines = [n for n in outputs if n != model_name]
    best = max(baselines, key=lambda n: systems[n]["chrF"]["score"])
    comparison = paired_bootstrap(
        outputs[model_name],
        outputs[best],
        references,
        target_language=target_language,
        resamples=resamples,
        seed=seed,
    )
    lo, hi = comparison["ci"]
    model_chrf = systems[model_name]["chrF"]["score"]
    if lo > 0:
        verdict = (
            f"the model beats the {best} baseline: chrF {model_chrf:.1f} vs "
            f"{systems[best]['chrF']['score']:.1f} ({comparison['diff']:+.1f}, 95% CI "
            f"{lo:+.1f} to {hi:+.1f}) on {len(pairs)} pairs"
        )
    elif hi < 0:
        verdict = (
            f"the model does NOT beat the {best} baseline: it is worse, chrF {model_chrf:.1f} vs "
            f"{systems[best]['chrF']['score']:.1f} ({comparison['diff']:+.1f}, 95% CI "
            f"{lo:+.1f} to {hi:+.1f}) on {len(pairs)} pairs"
        )
    else:
        verdict = (
            f"the model does NOT measurably beat the {best} baseline: chrF {model_chrf:.1f} vs "
            f"{systems[best]['chrF']['score']:.1f} ({comparison['diff']:+.1f}, 95% CI "
            f"{lo:+.1f} to {hi:+.1f} includes 0) on {len(pairs)} pairs"
        )
    per_sentence = sentence_chrf(outputs[model_name], references)
    worst = sorted(range(len(pairs)), key=lambda i: per_sentence[i])[:examples]
    return {
        "rows": len(pairs),
        "systems": systems,
        "best_baseline": best,
        "comparison": comparison,
        "beats_baseline": lo > 0,
        "verdict": verdict,
        "examples": [
            {
                "source": pairs[i].source,
                "reference": pairs[i].target,
                **{name: outputs[name][i] for name in outputs},
            }
            for i in range(min(examples, len(pairs)))
        ],
        "worst": [
            {
                "source": pairs[i].source,
                "reference": pairs[i].target,
                "model": outputs[model_name][i],
                "chrF": per_sentence[i],
            }
            for i in worst
        ],
    }
