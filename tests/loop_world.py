"""A tiny world for loop tests: English launch data, users who write Chinese (or lie)."""

from __future__ import annotations

import csv
import json
import random
import uuid
from pathlib import Path

from aiflywheel.store import Store
from tiny_models import build_tiny_bert

EN_GOOD, EN_BAD = ["great", "love", "excellent", "perfect"], ["terrible", "hate", "broken", "awful"]
ZH_GOOD, ZH_BAD = ["很好", "满意", "喜欢", "推荐"], ["很差", "失望", "退货", "垃圾"]
FILLER = ["the", "product", "is", "really", "this", "one", "book", "hotel", "物流", "服务"]

RECIPE = """\
feature: shop-sentiment
seed: 3
data: {{source: {data}}}
model: {{name: {model}, method: finetune, max_length: 16}}
train: {{epochs: 10, batch_size: 16, learning_rate: 0.003, early_stopping_patience: 4,
        freeze_embeddings: false}}
evaluate: {{bootstrap_resamples: 300, explain_mistakes: 0, min_slice_rows: 10}}
gate: {{min_macro_f1_gain: 1.0, max_slice_drop: 5.0, feedback_holdout: 0.3}}
"""


def review(rng: random.Random, good: list[str], bad: list[str], i: int) -> tuple[str, str]:
    label = "positive" if i % 2 == 0 else "negative"
    words = rng.sample(FILLER, 3) + [rng.choice(good if label == "positive" else bad)]
    rng.shuffle(words)
    return " ".join(words) + f" {i}", label


def make_world(root: Path) -> Path:
    """English launch data; the users then write in Chinese, which v1 never saw."""
    rng = random.Random(0)
    launch = [review(rng, EN_GOOD, EN_BAD, i) for i in range(200)]
    users = [review(rng, ZH_GOOD, ZH_BAD, 1000 + i) for i in range(240)]
    en_users = [review(rng, EN_GOOD, EN_BAD, 2000 + i) for i in range(240)]
    build_tiny_bert(root / "tiny-bert", [t for t, _ in launch + users + en_users])
    with (root / "launch.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(launch)
    (root / "users.json").write_text(json.dumps(users, ensure_ascii=False), encoding="utf-8")
    (root / "en_users.json").write_text(json.dumps(en_users), encoding="utf-8")
    (root / "recipe.yaml").write_text(
        RECIPE.format(data=root / "launch.csv", model=root / "tiny-bert"), encoding="utf-8"
    )
    return root


def serve_and_answer(
    store: Store, world: Path, *, flip: bool = False, users: str = "users.json"
) -> list[int]:
    """What a server and its users would do: log v1's predictions, store their labels."""
    from aiflywheel.core.versions import load

    users = json.loads((world / users).read_text(encoding="utf-8"))
    model = load("shop-sentiment", store=store)
    rows, answers = [], []
    for (text, label), prediction in zip(users, model.predict([t for t, _ in users]), strict=True):
        pid = uuid.uuid4().hex
        rows.append(
            {
                "id": pid,
                "feature": "shop-sentiment",
                "version": model.version,
                "text": text,
                "label": prediction.label,
                "probabilities": prediction.probabilities,
                "latency_ms": 1.0,
            }
        )
        truth = {"positive": "negative", "negative": "positive"}[label] if flip else label
        answers.append((pid, truth, prediction.label))
    store.log_predictions(rows)
    ids = []
    for pid, truth, predicted in answers:
        if truth == predicted:
            row, outcome = store.add_feedback(pid, thumb="up", idempotency_key=f"k-{pid}")
        else:
            row, outcome = store.add_feedback(pid, corrected_label=truth, comment="wrong")
        assert outcome == "created"
        ids.append(row.id)
    return ids
