"""Retrain an image feature: the champion's frozen splits plus accepted feedback (the
logged thumbnails or originals, labelled by the correction) -> a candidate -> the gate on
the frozen test split and held-out feedback -> promoted or kept out, audited.

Feedback whose image is (by decoded pixels) in the test or validation split is left out;
feedback logged with ``image.log.keep: hash`` has no image to learn from and is counted.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.core.gate import RetrainResult, holds_out
from aiflywheel.core.versions import conclude_retrain
from aiflywheel.errors import ConflictError, NotFoundError
from aiflywheel.files import write_json_atomic
from aiflywheel.recipe import Recipe, parse_recipe
from aiflywheel.tasks.image_classification.compare import compare_versions
from aiflywheel.tasks.image_classification.dataset import ImageSet
from aiflywheel.tasks.image_classification.images import ImageRejected, pixel_hash
from aiflywheel.tasks.image_classification.logged import read_logged_image
from aiflywheel.tasks.image_classification.models import load_image_model
from aiflywheel.tasks.image_classification.predictor import ImagePredictor
from aiflywheel.tasks.image_classification.train import read_splits, train_image_feature


def feedback_images(store, feature: str, recipe: Recipe, champion_dir: Path, home: Path):
    """(parts with feedback added to train, held-out feedback, counts)."""
    parts = read_splits(champion_dir)
    decoder = ImagePredictor(model=None, config=recipe.image)
    frozen = {m["pixel_hash"] for name in ("val", "test") for m in parts[name].meta}
    counts: Counter[str] = Counter()
    learned: dict[str, tuple[str, str, np.ndarray, dict]] = {}
    held: dict[str, tuple[str, str, np.ndarray, dict]] = {}
    for item in store.list_feedback(feature, state="accepted"):
        counts["accepted"] += 1
        label = item.label
        if label is None:
            counts["no_label"] += 1
            continue
        digest, data, _why = read_logged_image(item.text, home)
        if data is None:
            counts["no_image"] += 1
            continue
        try:
            pixels = decoder.decode(data).pixels
        except ImageRejected:
            counts["undecodable"] += 1
            continue
        key = pixel_hash(pixels)
        entry = (
            f"feedback-{item.id}",
            label,
            pixels,
            {"pixel_hash": key, "sha256": digest, "format": "feedback"},
        )
        if holds_out(feature, item.id, recipe.gate.feedback_holdout):
            held[key] = entry
        elif key in frozen:
            counts["in_test_or_val"] += 1
        else:
            learned[key] = entry  # the newest accepted answer for an image wins
    train = parts["train"]
    keep = [i for i, m in enumerate(train.meta) if m["pixel_hash"] not in learned]
    counts["replaced_train_rows"] = len(train) - len(keep)
    already = set(train.ids)
    counts["new"] = sum(1 for e in learned.values() if e[0] not in already)
    counts["used_for_training"] = len(learned)
    counts["base_train_rows"] = sum(1 for i in keep if not train.ids[i].startswith("feedback-"))
    parts["train"] = train.take(keep).concat(_as_set(list(learned.values()), train))
    seen = frozen | {m["pixel_hash"] for m in parts["train"].meta}
    holdout = _as_set([e for k, e in held.items() if k not in seen], train)
    counts["held_out"] = len(holdout)
    return parts, holdout, {k: int(v) for k, v in counts.items()}


def _as_set(entries: list, like: ImageSet) -> ImageSet:
    if not entries:
        return like.take([])
    return ImageSet(
        np.stack([e[2] for e in entries]),
        [e[1] for e in entries],
        [e[0] for e in entries],
        [e[3] for e in entries],
    )


def retrain_image_feature(
    feature: str, *, store, settings, actor: str, report, recipe: Recipe | None = None
) -> RetrainResult:
    """One turn of the wheel for an image feature (see the module doc)."""
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
    parts, holdout, counts = feedback_images(store, feature, recipe, champion_dir, settings.home)
    if counts.get("new", 0) < recipe.gate.min_feedback:
        raise ConflictError(
            f"{feature} has {counts.get('new', 0)} new accepted feedback image(s) to learn "
            f"from; gate.min_feedback is {recipe.gate.min_feedback} (review feedback with "
            "`flywheel feedback review`)"
        )
    report(
        f"v{champion.version} training images {counts['base_train_rows']:,} + "
        f"{counts['used_for_training']:,} accepted feedback ({counts['held_out']:,} held out)"
    )
    source = f"{feature} v{champion.version} splits + accepted feedback"

    def prepare(work_dir: Path) -> dict[str, Any]:
        for name, part in parts.items():
            part.save(work_dir / "splits" / name)
        holdout.save(work_dir / "splits" / "feedback_holdout")
        labels = sorted({*parts["train"].labels, *parts["val"].labels, *parts["test"].labels})
        write_json_atomic(work_dir / "splits" / "labels.json", labels)
        previous = json.loads((champion_dir / "data_report.json").read_text(encoding="utf-8"))
        everything = [*parts["train"].labels, *parts["val"].labels, *parts["test"].labels]
        data_report = {
            **previous,
            "source": source,
            "labels": {"counts": dict(sorted(Counter(everything).items()))},
            "retrain": counts,
        }
        write_json_atomic(work_dir / "data_report.json", data_report)
        write_json_atomic(work_dir / "retrain_data.json", counts)
        return data_report

    trained = train_image_feature(
        recipe, store=store, settings=settings, report=report, prepare=prepare, kind="retrain"
    )
    report(f"comparing v{champion.version} and v{trained.version} on the same images")
    gate = compare_versions(
        load_image_model(champion.model_path),
        load_image_model(trained.run_dir / "model"),
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
        metric="macro-F1",
    )
