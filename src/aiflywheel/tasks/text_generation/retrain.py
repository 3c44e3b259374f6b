"""Retrain a generator from feedback: choices -> preference pairs -> DPO; edits (and a
thumbs-up on a single answer) -> SFT rows; then the gate compares champion and candidate
on held-out preference pairs (how often each prefers the chosen response, with a CI) and
on the frozen test rows (perplexity, greedy chrF), and promotes or refuses, audited.

Feedback is held out by a stable hash of its id (``gate.feedback_holdout``): held-out
choices judge both versions and are never trained on. The candidate starts from the
champion (its LoRA adapter continues, or its full weights); SFT mixes the new rows with up
to four times as many of the champion's training rows, so it does not forget them; DPO's
reference is the model after that SFT.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from aiflywheel.core.gate import Gate, GateResult, at_least, at_most, holds_out
from aiflywheel.core.runs import CHECKPOINTS
from aiflywheel.core.versions import conclude_retrain
from aiflywheel.errors import ConflictError, NotFoundError
from aiflywheel.files import write_json_atomic
from aiflywheel.metrics.generation import mean_ci, paired_diff, text_scores
from aiflywheel.models.causal_lm import (
    Example,
    PreferencePair,
    Sampling,
    TunedLM,
    dpo_train,
    fine_tune,
    perplexity,
    preference_accuracy,
)
from aiflywheel.recipe import Recipe, parse_recipe
from aiflywheel.tasks.text_generation.data import PARTS, Row, read_split, write_rows
from aiflywheel.tasks.text_generation.train import (
    train_generation_feature,
    train_settings,
)

SCORE_ROWS = (
    ("preference", "held-out preference accuracy"),
    ("perplexity", "test perplexity"),
    ("chrf", "test chrF (greedy)"),
)


def _example(output: dict[str, Any], response: str = "") -> Example:
    return Example(
        response=response,
        prompt=str(output.get("prompt") or ""),
        messages=tuple((str(r), str(c)) for r, c in output.get("messages") or []),
    )


def feedback_data(store, feature: str, holdout: float) -> dict[str, Any]:
    """Accepted feedback as SFT rows and preference pairs, learned and held out."""
    counts: Counter[str] = Counter()
    sft: list[Row] = []
    pairs: list[PreferencePair] = []
    held_pairs: list[PreferencePair] = []
    held_rows: list[Row] = []
    for item in store.list_feedback(feature, state="accepted"):
        counts["accepted"] += 1
        payload, output = item.payload, item.output
        candidates = [str(c) for c in output.get("candidates") or []]
        held = holds_out(feature, item.id, holdout)
        example = _example(output)
        chosen = payload.get("chosen")
        new_pairs = []
        if chosen is not None and 0 <= chosen < len(candidates):
            best = candidates[chosen]
            new_pairs = [
                PreferencePair(example, best, other) for other in candidates if other != best
            ]
            counts["choices"] += 1
        corrected = payload.get("corrected_response")
        rows = []
        if corrected:
            counts["edits"] += 1
            rows.append(corrected)
            new_pairs += [
                PreferencePair(example, corrected, c)
                for c in dict.fromkeys(candidates)
                if c != corrected
            ]
        elif payload.get("thumb") == "up" and len(candidates) == 1:
            counts["thumbs_up"] += 1
            rows.append(candidates[0])
        elif payload.get("thumb") == "down" and chosen is None:
            counts["thumbs_down_without_correction"] += 1
        for response in rows:
            row = Row(
                f"feedback-{item.id}",
                _example(output, response),
                "other",
                {"feedback_id": item.id},
            )
            (held_rows if held else sft).append(row)
        (held_pairs if held else pairs).extend(new_pairs)
    counts["sft_rows"] = len(sft)
    counts["preference_pairs"] = len(pairs)
    counts["held_out_pairs"] = len(held_pairs)
    counts["held_out_rows"] = len(held_rows)
    return {
        "sft": sft,
        "pairs": pairs,
        "held_pairs": held_pairs,
        "held_rows": held_rows,
        "counts": {k: int(v) for k, v in counts.items()},
    }


def _greedy_chrf(lm: TunedLM, rows: list[Row], max_new_tokens: int) -> list[float]:
    sampling = Sampling(max_new_tokens=max_new_tokens)
    texts = [lm.generate(r.example, n=1, sampling=sampling)[0][0] for r in rows]
    return text_scores(texts, [r.example.response for r in rows])["chrf"]


def compare(
    champion: TunedLM,
    candidate: TunedLM,
    test: list[Row],
    held_pairs: list[PreferencePair],
    recipe: Recipe,
) -> GateResult:
    """Both versions on the same held-out pairs and test rows; the gate's decision."""
    config = recipe.generation
    resamples, seed = recipe.evaluate.bootstrap_resamples, recipe.seed
    scores: dict[str, dict[str, Any]] = {"champion": {}, "candidate": {}}
    accuracy: dict[str, list[int]] = {}
    for name, lm in (("champion", champion), ("candidate", candidate)):
        if held_pairs:
            accuracy[name] = preference_accuracy(lm.model, lm.tokenizer, held_pairs, chat=lm.chat)
            values = accuracy[name]
            scores[name]["preference"] = sum(values) / len(values)
            scores[name]["preference_ci"] = list(mean_ci(values, n_resamples=resamples, seed=seed))
        else:
            scores[name]["preference"] = None
        ppl, _ = perplexity(
            lm.model,
            lm.tokenizer,
            [r.example for r in test],
            chat=lm.chat,
            max_length=config.max_length,
        )
        scores[name]["perplexity"] = ppl
        scores[name]["chrf_rows"] = _greedy_chrf(
            lm, test[: config.sampling.max_prompts], config.sampling.max_new_tokens
        )
        scores[name]["chrf"] = sum(scores[name]["chrf_rows"]) / max(
            1, len(scores[name]["chrf_rows"])
        )
    comparison: dict[str, Any] = {
        "chrf": paired_diff(
            scores["candidate"]["chrf_rows"],
            scores["champion"]["chrf_rows"],
            n_resamples=resamples,
            seed=seed,
        )
    }
    gain = None
    if held_pairs:
        comparison["preference"] = paired_diff(
            accuracy["candidate"], accuracy["champion"], n_resamples=resamples, seed=seed
        )
        gain = 100 * comparison["preference"]["diff"]
    ppl_change = scores["candidate"]["perplexity"] / scores["champion"]["perplexity"] - 1
    chrf_drop = scores["champion"]["chrf"] - scores["candidate"]["chrf"]
    gate_config = config.gate
    pref_note = (
        f"{len(held_pairs)} held-out pairs; CI of the gain "
        f"{100 * comparison['preference']['ci'][0]:+.1f} to "
        f"{100 * comparison['preference']['ci'][1]:+.1f} points"
        if held_pairs
        else "no held-out preference pairs yet"
    )
    gate = Gate(
        [
            at_least(
                "preference accuracy gain",
                gain,
                gate_config.min_preference_gain,
                unit="points",
                note=pref_note,
            ),
            at_most(
                "test perplexity increase",
                ppl_change,
                gate_config.max_perplexity_increase,
                note=f"{scores['champion']['perplexity']:.3f} -> "
                f"{scores['candidate']['perplexity']:.3f}",
            ),
            at_most("test chrF drop", chrf_drop, gate_config.max_chrf_drop, unit="points"),
        ]
    )
    for side in scores.values():
        side.pop("chrf_rows")
    when = "candidate prefers the chosen responses at least as often and keeps test quality"
    return GateResult(
        passed=gate.passed,
        reason=gate.reason(when),
        checks=gate.to_json(),
        champion=scores["champion"],
        candidate=scores["candidate"],
        comparison=comparison,
    )


def retrain_generation_feature(
    feature: str, *, store, settings, actor: str, report, recipe: Recipe | None = None
):
    """One turn of the wheel for a generator (see the module doc)."""
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
    # The base as the champion resolved it (a relative folder of the recipe is absolute there).
    generation = recipe.generation.model_copy(update={"model": champion.base_model})
    recipe = recipe.model_copy(update={"generation": generation})
    champion_model = Path(champion.model_path)
    champion_dir = champion_model.parent
    data = feedback_data(store, feature, recipe.gate.feedback_holdout)
    counts = data["counts"]
    learnable = counts["sft_rows"] + counts["preference_pairs"]
    if learnable < recipe.gate.min_feedback:
        raise ConflictError(
            f"{feature} has {learnable} accepted feedback row(s) and pair(s) to learn from; "
            f"gate.min_feedback is {recipe.gate.min_feedback} (review feedback with "
            "`flywheel feedback review`)"
        )
    report(
        f"v{champion.version}: {counts['sft_rows']} edited rows, {counts['preference_pairs']} "
        f"preference pairs ({counts['held_out_pairs']} pairs held out)"
    )
    parts = {n: read_split(champion_dir / "splits" / f"{n}.jsonl") for n in PARTS}
    test = parts["test"] + data["held_rows"]

    def prepare(work_dir: Path) -> dict[str, Any]:
        write_rows(work_dir / "splits" / "train.jsonl", parts["train"] + data["sft"])
        write_rows(work_dir / "splits" / "val.jsonl", parts["val"])
        write_rows(work_dir / "splits" / "test.jsonl", test)
        write_json_atomic(work_dir / "retrain_data.json", counts)
        source = f"{feature} v{champion.version} splits + accepted feedback"
        return {"source": source, "retrain": counts}

    def tune(_model, tokenizer, chat, _parts, work_dir, report_):
        lm = TunedLM.load(champion_model, settings=settings, trainable=True)
        model = lm.model
        base_settings = train_settings(recipe)
        logs: dict[str, Any] = {}
        if data["sft"]:
            replay = random.Random(recipe.seed).sample(
                parts["train"], min(len(parts["train"]), 4 * len(data["sft"]))
            )
            model, log = fine_tune(
                model,
                lm.tokenizer,
                [r.example for r in data["sft"] + replay],
                chat=lm.chat,
                settings=base_settings,
                checkpoint_dir=work_dir / CHECKPOINTS / "sft",
                report=report_,
            )
            logs["sft"] = log.to_json()
        if data["pairs"]:
            model, log = dpo_train(
                model,
                lm.tokenizer,
                data["pairs"],
                chat=lm.chat,
                settings=base_settings,
                beta=recipe.generation.dpo_beta,
                checkpoint_dir=work_dir / CHECKPOINTS / "dpo",
                report=report_,
            )
            logs["dpo"] = log.to_json()
        lm.model = model
        return lm, logs

    trained = train_generation_feature(
        recipe,
        store=store,
        settings=settings,
        report=report,
        prepare=prepare,
        tune=tune,
        kind="retrain",
        key_extra=f"v{champion.version}:{sorted(counts.items())}",
    )
    report(f"comparing v{champion.version} and v{trained.version} on the same rows")
    gate = compare(
        TunedLM.load(champion_model, settings=settings),
        TunedLM.load(trained.run_dir / "model", settings=settings),
        test,
        data["held_pairs"],
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
        metric="preference accuracy",
        score_rows=SCORE_ROWS,
    )
