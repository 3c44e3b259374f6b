"""A tiny store for console tests: one classifier feature with two TF-IDF versions (v1
the champion, v2 a candidate), logged predictions, pending feedback, and one key per role."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from aiflywheel.core.versions import promote  # noqa: E402
from aiflywheel.data.dataset import Dataset, Record  # noqa: E402
from aiflywheel.store import Store  # noqa: E402
from test_serve import FEATURE, register_tfidf  # noqa: E402
from tiny_models import sentiment_rows  # noqa: E402

TEXTS = [
    ("great product, love it", "positive", "positive"),
    ("terrible, broken on arrival", "negative", "negative"),
    ("物流很快 很好", "positive", "negative"),
    ("awful support, call me at 13812345678", "negative", "positive"),
    ("excellent value", "positive", "positive"),
    ("很差 退货", "negative", "positive"),
]


@dataclass
class World:
    feature: str
    keys: dict[str, str]  # role -> key
    feedback_ids: list[int]


def write_splits(models: Path) -> None:
    """The rows a TF-IDF version learned from, beside it (where drift checks look)."""
    rows = sentiment_rows()
    (models / "splits").mkdir(parents=True, exist_ok=True)
    parts = {"train": rows[:180], "val": rows[180:210], "test": rows[210:]}
    for name, part in parts.items():
        Dataset(
            Record(id=f"{name}-{i}", text=text, label=label) for i, (text, label) in enumerate(part)
        ).to_jsonl(models / "splits" / f"{name}.jsonl")


def build_world(store: Store, models: Path) -> World:
    for folder in ("v1", "v2"):  # each version in its own folder, as runs keep them
        write_splits(models / folder)
    good = {"macro_f1": 0.9, "macro_f1_ci": [0.85, 0.95], "accuracy": 0.9,
            "baseline_name": "majority", "baseline_macro_f1": 0.33, "beats_baseline": True}
    register_tfidf(store, models / "v1", metrics=good)
    register_tfidf(store, models / "v2", metrics={**good, "macro_f1": 0.92}, C=2.0)
    promote(store, FEATURE, 1, actor="setup", reason="first champion")
    rows, ids = [], []
    for text, predicted, _ in TEXTS:
        other = "negative" if predicted == "positive" else "positive"
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "feature": FEATURE,
                "version": 1,
                "text": text,
                "label": predicted,
                "probabilities": {predicted: 0.8, other: 0.2},
                "latency_ms": 1.0,
            }
        )
    store.log_predictions(rows)
    for row, (_, predicted, truth) in zip(rows, TEXTS, strict=True):
        if truth == predicted:
            item, _ = store.add_feedback(row["id"], thumb="up")
        else:
            item, _ = store.add_feedback(row["id"], corrected_label=truth, comment="wrong")
        ids.append(item.id)
    run_dir = models / "run-train"
    run_dir.mkdir()
    (run_dir / "train_log.jsonl").write_text(
        '{"epoch": 1, "loss": 0.69}\n{"epoch": 2, "loss": 0.41}\n', encoding="utf-8"
    )
    run = store.start_run(FEATURE, "train", str(run_dir))
    store.finish_run(run.id, status="succeeded", summary={"macro_f1": 0.9})
    failed = store.start_run(FEATURE, "retrain", str(models / "run-gone"))
    store.finish_run(failed.id, status="failed", error="DataError: the splits are missing")
    keys = {
        role: store.create_api_key(role, f"{role}-person")[0]
        for role in ("admin", "reviewer", "viewer", "client")
    }
    return World(feature=FEATURE, keys=keys, feedback_ids=ids)
