"""Retrain a classifier: the champion's splits plus accepted feedback -> a candidate ->
the gate on the frozen test split and held-out feedback -> promoted or kept out, audited.

Promotion and rollback themselves are task-independent (``aiflywheel.core.versions``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aiflywheel.core.gate import GateResult, RetrainResult, classifier_gate, holds_out
from aiflywheel.core.versions import conclude_retrain
from aiflywheel.data.clean import clean_text
from aiflywheel.data.dataset import Dataset, Record
from aiflywheel.data.language import detect_language
from aiflywheel.data.text_normalize import near_duplicate_key
from aiflywheel.errors import ConflictError, DataError, ModelError, NotFoundError
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.metrics.classification import (
    classification_metrics,
    paired_bootstrap,
    slice_metrics,
)
from aiflywheel.recipe import Recipe, parse_recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.text_classification.models.base import load_classifier, read_manifest
from aiflywheel.tasks.text_classification.train import PreparedData, train_feature


@dataclass
class FeedbackData:
    """The dataset of a retrain: the champion's splits plus accepted feedback."""

    parts: dict[str, Dataset]
    holdout: Dataset
    counts: dict[str, int]

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for name in ("train", "val", "test"):
            digest.update(self.parts[name].content_hash().encode())
        digest.update(self.holdout.content_hash().encode())
        return digest.hexdigest()


def feature_labels(store: Store, feature: str) -> list[str]:
    """Every label any registered version of ``feature`` knows."""
    labels: set[str] = set()
    for row, _ in store.list_model_versions(feature):
        try:
            labels.update(read_manifest(Path(row.model_path))["labels"])
        except ModelError:
            continue
    return sorted(labels)


def feedback_dataset(
    store: Store, feature: str, recipe: Recipe, champion_dir: Path
) -> FeedbackData:
    """The champion's splits with accepted feedback added to train, minus the held-out share.

    The test split is frozen: it is copied as it is, and feedback whose text is (up to
    case, punctuation and spaces) in the test or validation split is left out, so the
    comparison with the champion stays fair. A correction replaces a training row with
    the same text. Feedback ids give stable record ids (``feedback-<id>``), so a later
    retrain does not add the same item twice.
    """
    splits = champion_dir / "splits"
    if not all((splits / f"{name}.jsonl").is_file() for name in ("train", "val", "test")):
        raise DataError(
            f"the champion's splits are missing under {splits}; retrain needs the run folder "
            "of the serving version"
        )
    parts = {n: Dataset.from_jsonl(splits / f"{n}.jsonl") for n in ("train", "val", "test")}
    frozen = {near_duplicate_key(r.text) for n in ("val", "test") for r in parts[n]}
    counts = Counter()
    learned: dict[str, Record] = {}
    held: dict[str, Record] = {}
    for item in store.list_feedback(feature, state="accepted"):
        label = item.label
        counts["accepted"] += 1
        if label is None:
            counts["no_label"] += 1
            continue
        text = clean_text(item.text, recipe.clean)
        if len(text) < max(1, recipe.clean.min_chars):
            counts["too_short"] += 1
            continue
        key = near_duplicate_key(text)
        record = Record(id=f"feedback-{item.id}", text=text, label=label, meta={})
        if holds_out(feature, item.id, recipe.gate.feedback_holdout):
            held[key] = record
        elif key in frozen:
            counts["in_test_or_val"] += 1
        else:
            learned[key] = record  # the newest accepted answer for a text wins
    base = [r for r in parts["train"] if near_duplicate_key(r.text) not in learned]
    already = {r.id for r in parts["train"]}
    counts["replaced_train_rows"] = len(parts["train"]) - len(base)
    counts["new"] = sum(1 for r in learned.values() if r.id not in already)
    counts["used_for_training"] = len(learned)
    counts["base_train_rows"] = len([r for r in base if not r.id.startswith("feedback-")])
    parts["train"] = Dataset([*base, *learned.values()])
    # Held-out rows judge both versions, so none may be a text either one trained on.
    seen = frozen | {near_duplicate_key(r.text) for r in parts["train"]}
    holdout = Dataset(r for key, r in held.items() if key not in seen)
    counts["held_out"] = len(holdout)
    return FeedbackData(parts=parts, holdout=holdout, counts={k: int(v) for k, v in counts.items()})


def _write_retrain_data(data: FeedbackData, recipe: Recipe, source: str):
    def prepare(work_dir: Path) -> PreparedData:
        work_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            work_dir / "recipe.yaml",
            yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False),
        )
        everything = Dataset([*data.parts["train"], *data.parts["val"], *data.parts["test"]])
        everything.to_jsonl(work_dir / "dataset.jsonl")
        for name, part in data.parts.items():
            part.to_jsonl(work_dir / "splits" / f"{name}.jsonl")
        data.holdout.to_jsonl(work_dir / "splits" / "feedback_holdout.jsonl")
        write_json_atomic(work_dir / "retrain_data.json", data.counts)
        labels = Counter(r.label for r in everything)
        return PreparedData(
            dataset_version=everything.content_hash(),
            split_version=data.content_hash[:16],
            rows=len(everything),
            labels=dict(sorted(labels.items())),
            source=source,
        )

    return prepare


def compare_versions(
    champion, candidate, test: Dataset, holdout: Dataset, recipe: Recipe
) -> GateResult:
    """Score both classifiers on the frozen test split plus held-out feedback; apply the gate."""
    rows = Dataset([*test, *holdout])
    y_true = [r.label for r in rows]
    labels = sorted(set(y_true) | set(champion.labels) | set(candidate.labels))
    champ_pred = [p.label for p in champion.predict(rows.texts)]
    cand_pred = [p.label for p in candidate.predict(rows.texts)]
    n_test = len(test)
    seed, resamples = recipe.seed, recipe.evaluate.bootstrap_resamples

    def scores(pred: list[str]) -> dict[str, Any]:
        out = {
            "all": classification_metrics(y_true, pred, None, labels)["macro_f1"],
            "test": classification_metrics(y_true[:n_test], pred[:n_test], None, labels)[
                "macro_f1"
            ],
            "accuracy": classification_metrics(y_true, pred, None, labels)["accuracy"],
        }
        if len(holdout):
            out["feedback"] = classification_metrics(y_true[n_test:], pred[n_test:], None, labels)[
                "macro_f1"
            ]
        return out

    comparison = paired_bootstrap(
        y_true, cand_pred, champ_pred, labels, n_resamples=resamples, seed=seed
    )
    columns = recipe.evaluate.slices
    if columns is None:
        columns = sorted({key for r in test for key in r.meta})
    slice_values = {c: [r.meta.get(c, "") for r in rows] for c in columns}
    slice_values["language"] = [detect_language(t) for t in rows.texts]
    slice_values["source"] = ["test"] * n_test + ["feedback"] * len(holdout)
    min_rows = recipe.evaluate.min_slice_rows
    champ_slices = slice_metrics(y_true, champ_pred, slice_values, labels, min_support=min_rows)
    cand_slices = slice_metrics(y_true, cand_pred, slice_values, labels, min_support=min_rows)
    gate, drops, gain, lo, hi = classifier_gate(champ_slices, cand_slices, comparison, recipe.gate)
    rows_note = f"{n_test} frozen test rows + {len(holdout)} held-out feedback"
    reason = gate.reason(
        f"candidate is better: {gain:+.2f} macro-F1 points (95% CI {lo:+.2f} to "
        f"{hi:+.2f}) on {rows_note}"
    )
    return GateResult(
        passed=gate.passed,
        reason=reason,
        checks=gate.to_json(),
        champion=scores(champ_pred),
        candidate=scores(cand_pred),
        comparison={
            **comparison,
            "rows": len(rows),
            "test_rows": n_test,
            "feedback_rows": len(holdout),
        },
        slice_drops=drops,
    )


def retrain_feature(
    feature: str,
    *,
    store: Store,
    settings: Settings,
    actor: str,
    recipe: Recipe | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> RetrainResult:
    """One turn of the wheel: data + accepted feedback -> candidate -> gate -> promote or keep."""
    row = store.get_feature(feature)
    if row is None:
        raise NotFoundError(f"unknown feature {feature!r}; run `flywheel train` on its recipe")
    recipe = recipe or parse_recipe(row.recipe, origin=f"stored recipe of {feature}")
    if recipe.feature != feature:
        raise ConflictError(f"the recipe declares feature {recipe.feature!r}, not {feature!r}")
    champion = store.champion(feature)
    if champion is None:
        raise ConflictError(
            f"feature {feature!r} has no champion yet; promote one first "
            f"(`flywheel promote {feature}:1`)"
        )
    data = feedback_dataset(store, feature, recipe, Path(champion.model_path).parent)
    if data.counts.get("new", 0) < recipe.gate.min_feedback:
        raise ConflictError(
            f"{feature} has {data.counts.get('new', 0)} new accepted feedback item(s) to learn "
            f"from; gate.min_feedback is {recipe.gate.min_feedback} (review feedback with "
            "`flywheel feedback review`)"
        )
    report(
        f"v{champion.version} training rows {data.counts['base_train_rows']:,} + "
        f"{data.counts['used_for_training']:,} accepted feedback "
        f"({data.counts['held_out']:,} held out for evaluation, "
        f"{data.counts.get('in_test_or_val', 0):,} left out as already in test/val)"
    )
    source = f"{feature} v{champion.version} splits + accepted feedback"
    trained = train_feature(
        recipe,
        store=store,
        settings=settings,
        report=report,
        prepare=_write_retrain_data(data, recipe, source),
        kind="retrain",
        key_extra=data.content_hash,
    )
    report(f"comparing v{champion.version} and v{trained.version} on the same rows")
    gate = compare_versions(
        load_classifier(champion.model_path),
        load_classifier(trained.run_dir / "model"),
        data.parts["test"],
        data.holdout,
        recipe,
    )
    return conclude_retrain(
        store,
        feature,
        champion=champion,
        candidate_version=trained.version,
        gate=gate,
        data=data.counts,
        run_id=trained.run_id,
        run_dir=trained.run_dir,
        actor=actor,
        metric="macro-F1",
    )
