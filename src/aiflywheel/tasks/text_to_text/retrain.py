"""Retrain a text_to_text feature: the champion's frozen splits plus accepted feedback
(a corrected output teaches source -> correction; a thumbs up teaches source -> the output
given) -> a candidate -> the chrF gate on the frozen test split and held-out feedback ->
promoted or kept out, audited.

Feedback whose source is in the validation or test split is not trained on (counted); a
feedback source replaces the training pairs with the same source (the newest answer wins).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from aiflywheel.core.gate import (
    Gate,
    GateResult,
    RetrainResult,
    above,
    at_least,
    at_most,
    holds_out,
)
from aiflywheel.core.versions import conclude_retrain
from aiflywheel.errors import ConflictError, NotFoundError
from aiflywheel.metrics.translation import corpus_scores, paired_bootstrap
from aiflywheel.recipe import Recipe, parse_recipe
from aiflywheel.tasks.text_to_text.data import Pair, write_pairs
from aiflywheel.tasks.text_to_text.model import Seq2SeqTranslator
from aiflywheel.tasks.text_to_text.train import read_splits, train_text_to_text_feature


def feedback_pairs(store, feature: str, recipe: Recipe, champion_dir: Path):
    """(splits with feedback added to train, held-out feedback pairs, counts)."""
    parts = read_splits(champion_dir)
    frozen = {p.source for name in ("val", "test") for p in parts[name]}
    counts: Counter[str] = Counter()
    learned: dict[str, Pair] = {}
    held: dict[str, Pair] = {}
    for item in store.list_feedback(feature, state="accepted"):
        counts["accepted"] += 1
        corrected = item.payload.get("corrected_target")
        target = corrected or (item.output.get("output") if item.thumb == "up" else None)
        if not target:
            counts["nothing_to_learn"] += 1
            continue
        pair = Pair(" ".join(item.text.split()), target, origin=f"feedback-{item.id}")
        if holds_out(feature, item.id, recipe.gate.feedback_holdout):
            held[pair.source] = pair
        elif pair.source in frozen:
            counts["in_test_or_val"] += 1
        else:
            learned[pair.source] = pair  # oldest first: the newest answer wins
    train = parts["train"]
    kept = [p for p in train if p.source not in learned]
    already = {p.origin for p in train}
    counts["replaced_train_rows"] = len(train) - len(kept)
    counts["new"] = sum(1 for p in learned.values() if p.origin not in already)
    counts["used_for_training"] = len(learned)
    counts["base_train_rows"] = sum(1 for p in kept if not p.origin.startswith("feedback-"))
    parts["train"] = kept + list(learned.values())
    seen = frozen | {p.source for p in parts["train"]}
    holdout = [p for s, p in held.items() if s not in seen]
    counts["held_out"] = len(holdout)
    return parts, holdout, {k: int(v) for k, v in counts.items()}


def compare_translators(
    champion: Seq2SeqTranslator,
    candidate: Seq2SeqTranslator,
    test: list[Pair],
    holdout: list[Pair],
    recipe: Recipe,
) -> GateResult:
    """Both versions on the frozen test split plus held-out feedback: chrF gain with its
    paired-bootstrap CI, and the drop on each of the two slices."""
    config = recipe.text_to_text
    rows = test + holdout
    sources = [p.source for p in rows]
    references = [p.target for p in rows]

    def outputs(model: Seq2SeqTranslator) -> list[str]:
        decoded = model.translate(
            sources, beam_size=config.beam_size, max_tokens=config.max_output_tokens
        )
        return [t.text for t in decoded]

    champ, cand = outputs(champion), outputs(candidate)
    n_test = len(test)
    resamples = recipe.evaluate.bootstrap_resamples
    language = config.target_language

    def chrf(hyp: list[str], refs: list[str]) -> float:
        scored = corpus_scores(hyp, refs, target_language=language, resamples=100, seed=recipe.seed)
        return scored["chrF"]["score"]

    def scores(hyp: list[str]) -> dict[str, Any]:
        out = {"all": chrf(hyp, references), "test": chrf(hyp[:n_test], references[:n_test])}
        if holdout:
            out["feedback"] = chrf(hyp[n_test:], references[n_test:])
        return out

    champion_scores, candidate_scores = scores(champ), scores(cand)
    comparison = paired_bootstrap(
        cand, champ, references, target_language=language, resamples=resamples, seed=recipe.seed
    )
    drops = sorted(
        (
            {
                "slice": f"source={name}",
                "rows": n_test if name == "test" else len(holdout),
                "champion": champion_scores[name],
                "candidate": candidate_scores[name],
                "drop_points": round(champion_scores[name] - candidate_scores[name], 3),
            }
            for name in ("test", "feedback")
            if name in champion_scores
        ),
        key=lambda d: -d["drop_points"],
    )
    gain = comparison["diff"]
    lo, hi = comparison["ci"]
    checks = [at_least("chrF gain", gain, config.gate.min_chrf_gain, unit="points")]
    if recipe.gate.require_significance:
        checks.append(
            above(
                "significance (lower bound of the gain's 95% CI)",
                lo,
                0.0,
                unit="points",
                note=f"CI {lo:+.2f} to {hi:+.2f}",
            )
        )
    worst = drops[0] if drops else None
    checks.append(
        at_most(
            "largest slice drop",
            None if worst is None else worst["drop_points"],
            config.gate.max_slice_drop,
            unit="points",
            note="" if worst is None else worst["slice"],
        )
    )
    gate = Gate(checks)
    reason = gate.reason(
        when_passed=f"candidate is better: {gain:+.2f} chrF points (95% CI {lo:+.2f} to "
        f"{hi:+.2f}) on {n_test} frozen test pairs + {len(holdout)} held-out feedback"
    )
    return GateResult(
        passed=gate.passed,
        reason=reason,
        checks=gate.to_json(),
        champion=champion_scores,
        candidate=candidate_scores,
        comparison={
            **comparison,
            "rows": len(rows),
            "test_rows": n_test,
            "feedback_rows": len(holdout),
        },
        slice_drops=drops,
    )


def _summary(row) -> dict[str, Any]:
    metrics = row.metrics or {}
    return {
        "version": row.version,
        "model": f"{row.base_model}/{row.method}",
        "chrf": metrics.get("chrf"),
        "bleu": metrics.get("bleu"),
    }


def retrain_text_to_text(
    feature: str, *, store, settings, actor: str, report, recipe: Recipe | None = None
) -> RetrainResult:
    """One turn of the wheel for a text_to_text feature (see the module doc)."""
    row = store.get_feature(feature)
    if row is None:
        raise NotFoundError(f"unknown feature {feature!r}; run `flywheel train` on its recipe")
    recipe = recipe or parse_recipe(row.recipe, origin=f"stored recipe of {feature}")
    champion = store.champion(feature)
    if champion is None:
        raise ConflictError(
            f"feature {feature!r} has no champion yet; promote one first "
            f"(`flywheel promote {feature}:1`)"
        )
    champion_dir = Path(champion.model_path).parent
    parts, holdout, counts = feedback_pairs(store, feature, recipe, champion_dir)
    if counts.get("new", 0) < recipe.gate.min_feedback:
        raise ConflictError(
            f"{feature} has {counts.get('new', 0)} new accepted corrections to learn from; "
            f"gate.min_feedback is {recipe.gate.min_feedback} (review feedback with "
            "`flywheel feedback review`)"
        )
    report(
        f"v{champion.version} training pairs {counts['base_train_rows']:,} + "
        f"{counts['used_for_training']:,} accepted feedback ({counts['held_out']:,} held out)"
    )
    previous = (champion_dir / "data_report.json").read_text(encoding="utf-8")

    def prepare(work_dir: Path) -> dict[str, Any]:
        import json

        for name, pairs in parts.items():
            write_pairs(work_dir / "splits" / f"{name}.jsonl", pairs)
        write_pairs(work_dir / "splits" / "feedback_holdout.jsonl", holdout)
        return {
            **json.loads(previous),
            "source": f"{feature} v{champion.version} splits + accepted feedback",
            "retrain": counts,
        }

    trained = train_text_to_text_feature(
        recipe,
        store=store,
        settings=settings,
        report=report,
        prepare=prepare,
        kind="retrain",
        key_extra=f"v{champion.version}:{sorted(counts.items())}",
    )
    report(f"comparing v{champion.version} and v{trained.version} on the same pairs")
    gate = compare_translators(
        Seq2SeqTranslator.load(champion.model_path),
        Seq2SeqTranslator.load(trained.run_dir / "model"),
        parts["test"],
        holdout,
        recipe,
    )
    return conclude_retrain(
        store,
        feature,
        champion=champion,
        candidate_version=trained.version,
        gate=gate,
        data=counts,
        run_id=trained.run_id,
        run_dir=trained.run_dir,
        actor=actor,
        metric="chrF",
        summary=_summary,
    )
