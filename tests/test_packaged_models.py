"""Training and prediction with the real packaged encoders on small samples (marked: packaged)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflywheel.core.versions import load
from aiflywheel.recipe import parse_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification.train import train_feature

pytestmark = pytest.mark.packaged


def _recipe(source: str, feature: str, model: str, method: str, meta: list[str]) -> dict:
    return {
        "feature": feature,
        "seed": 3,
        "data": {
            "source": source,
            "sample": 400,
            "columns": {"text": "text", "label": "label", "meta": meta},
        },
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "model": {"name": model, "method": method, "max_length": 48},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 0.0001},
        "evaluate": {"bootstrap_resamples": 200, "explain_mistakes": 2, "slices": []},
    }


def test_minilm_finetune_on_english_reviews(tmp_path: Path) -> None:
    recipe = parse_recipe(_recipe("demo:en-reviews", "en-small", "minilm", "finetune", ["movie"]))
    result = train_feature(recipe, store=open_store(), settings=get_settings())
    assert result.metrics["model"]["metrics"]["accuracy"] > 0.5
    prediction = load("en-small").predict(["A moving, beautifully acted film."])[0]
    assert prediction.label in {"positive", "negative"}


def test_e5_small_head_on_chinese_reviews(tmp_path: Path) -> None:
    recipe = parse_recipe(_recipe("demo:zh-reviews", "zh-small", "e5-small", "head", []))
    result = train_feature(recipe, store=open_store(), settings=get_settings())
    # A frozen multilingual encoder separates Chinese sentiment well above chance.
    assert result.metrics["model"]["metrics"]["macro_f1"] > 0.7
    model = load("zh-small")
    labels = [
        p.label for p in model.predict(["质量非常好，很满意，推荐购买", "太差了，完全不能用，退货"])
    ]
    assert labels == ["positive", "negative"]
