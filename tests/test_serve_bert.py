"""Serving a fine-tuned tiny BERT: the torch path through the batcher and the API."""

from __future__ import annotations

import csv
import sys
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from aiflywheel.core.versions import promote
from aiflywheel.recipe import load_recipe
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from test_serve import metric_value  # noqa: E402
from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402

RECIPE = """\
feature: tiny-bert-sentiment
seed: 3
data: {{source: {data}, columns: {{text: text, label: label}}}}
pii: {{mode: redact}}
model: {{name: {model}, method: finetune, max_length: 32}}
train: {{epochs: 1, batch_size: 16, learning_rate: 0.003, threads: 1}}
evaluate: {{bootstrap_resamples: 100, explain_mistakes: 0}}
"""


def test_a_finetuned_tiny_bert_is_served(tmp_path: Path) -> None:
    rows = sentiment_rows(80)
    build_tiny_bert(tmp_path / "tiny-bert", [text for text, _ in rows])
    with (tmp_path / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        RECIPE.format(data=tmp_path / "reviews.csv", model=tmp_path / "tiny-bert"),
        encoding="utf-8",
    )
    store = open_store()
    result = train_feature(load_recipe(recipe_path), store=store, settings=get_settings())
    assert result.method == "finetune"

    # The tiny model may lose to its TF-IDF baseline (then registered too): serve the model.
    promote(
        store,
        "tiny-bert-sentiment",
        result.version,
        actor="test",
        force=True,
        reason="this test serves the fine-tuned model",
    )
    config = ServeConfig(auth=False, max_wait_ms=100)
    with TestClient(create_app(config, store)) as client:
        answers = []

        def call(i: int) -> None:
            body = {"texts": [f"很好 great {i}", f"退货 terrible {i}"]}
            answers.append(client.post("/v1/classify", json=body))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [a.status_code for a in answers] == [200] * 8
        for answer in answers:
            body = answer.json()
            assert body["feature"] == "tiny-bert-sentiment" and body["version"] == result.version
            for prediction in body["predictions"]:
                assert set(prediction["probabilities"]) == {"negative", "positive"}
                assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4
        one = client.post("/v1/classify", json={"text": "email a@b.com 很好"}).json()
        metrics = client.get("/metrics").text
    assert metric_value(metrics, "flywheel_batch_size_sum", feature="tiny-bert-sentiment") == 17
    row, _ = store.get_prediction(one["prediction_id"])
    assert row.text == "email <EMAIL> 很好"
