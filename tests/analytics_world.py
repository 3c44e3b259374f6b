"""A tiny served classifier for analytics tests: a TF-IDF version with frozen splits,
registered as champion, and traffic to log against it (seeded)."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aiflywheel.data.dataset import Dataset, Record
from aiflywheel.store import Store

FEATURE = "shop-sentiment"
EN_GOOD = ["great", "love", "excellent", "perfect", "nice", "happy"]
EN_BAD = ["terrible", "hate", "broken", "awful", "poor", "sad"]
FILLER = ["the", "product", "is", "really", "this", "one", "book", "hotel", "was", "very"]
ZH = ["物流太慢了", "客服态度很差", "包装破损严重", "质量非常好", "价格实惠推荐", "发货速度快"]
RARE = ["zygomorphic", "quixotic", "flibbertigibbet", "xylograph", "snollygoster", "kerfuffle"]


def english(rng: random.Random, i: int) -> tuple[str, str]:
    label = "positive" if i % 2 == 0 else "negative"
    words = rng.sample(FILLER, rng.randint(2, 5)) + [rng.choice(EN_GOOD if i % 2 == 0 else EN_BAD)]
    rng.shuffle(words)
    return " ".join(words), label


def shifted(rng: random.Random, i: int) -> str:
    """Longer Chinese texts with English words the training data never had."""
    return "".join(rng.sample(ZH, 3)) + " " + " ".join(rng.sample(RARE, 3))


def build_champion(store: Store, root: Path, *, rows: int = 300, recipe_extra: dict | None = None):
    """A TF-IDF classifier trained on English reviews, registered as champion."""
    from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline

    rng = random.Random(0)
    data = [english(rng, i) for i in range(rows)]
    run_dir = root / "run-1"
    splits = run_dir / "splits"
    splits.mkdir(parents=True)
    cut1, cut2 = int(rows * 0.8), int(rows * 0.9)
    for name, part in (("train", data[:cut1]), ("val", data[cut1:cut2]), ("test", data[cut2:])):
        Dataset(
            Record(id=f"{name}-{i}", text=t, label=y) for i, (t, y) in enumerate(part)
        ).to_jsonl(splits / f"{name}.jsonl")
    model = TfidfBaseline().fit([t for t, _ in data[:cut1]], [y for _, y in data[:cut1]])
    model.save(run_dir / "model")
    recipe = {"feature": FEATURE, "seed": 3, "data": {"source": "reviews.csv"}}
    recipe.update(recipe_extra or {})
    store.upsert_feature(FEATURE, "text_classification", "", recipe)
    version = store.register_model_version(
        FEATURE,
        run_id=None,
        dataset_version_id=None,
        model_path=str(run_dir / "model"),
        base_model="tfidf",
        method="tfidf-logreg",
        metrics={"macro_f1": 0.9},
        recipe=recipe,
    ).version
    store.change_champion(FEATURE, version, action="promote", actor="test", reason="test")
    return model, version, run_dir


def log_traffic(store: Store, model, version: int, texts: list[str], *, days: int = 1) -> list[str]:
    """Log ``texts`` as the champion's predictions, spread over ``days`` days."""
    now = datetime.now(timezone.utc)
    ids, rows = [], []
    for i, (text, prediction) in enumerate(zip(texts, model.predict(texts), strict=True)):
        pid = uuid.uuid4().hex
        ids.append(pid)
        rows.append(
            {
                "id": pid,
                "feature": FEATURE,
                "version": version,
                "text": text,
                "label": prediction.label,
                "probabilities": prediction.probabilities,
                "latency_ms": 1.0,
                "created_at": now - timedelta(days=(i % days)),
            }
        )
    store.log_predictions(rows)
    return ids


def dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1)
