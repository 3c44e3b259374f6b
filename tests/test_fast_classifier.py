"""Frozen-layer caching, length buckets, the stacked model and auto's candidates (tiny models)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.core.versions import load
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification import auto
from aiflywheel.tasks.text_classification.models import layer_cache
from aiflywheel.tasks.text_classification.models.base import load_classifier
from aiflywheel.tasks.text_classification.models.roundtrip import reload_verified
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert, news_rows  # noqa: E402

RECIPE = """\
feature: tiny-news
seed: 3
data: {{source: {data}, columns: {{text: text, label: label}}}}
model: {{name: {model}, method: auto, max_length: 32}}
train: {{epochs: 2, batch_size: 16, learning_rate: 0.003, freeze_layers: 1,
        time_budget_minutes: {budget}}}
evaluate: {{bootstrap_resamples: 200, explain_mistakes: 2, min_slice_rows: 5}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fast-world")
    rows = news_rows(240)
    build_tiny_bert(root / "tiny-bert", [text for text, _ in rows])
    with (root / "news.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return root


def _tiny(world: Path, settings=None):
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )

    classifier = FinetunedClassifier(
        "tiny",
        str(world / "tiny-bert"),
        max_length=32,
        settings=settings or FinetuneSettings(freeze_layers=1),
    )
    classifier.labels = ["finance", "sports", "tech"]
    return classifier


def test_top_layers_on_the_cache_equal_the_full_model(world: Path, tmp_path: Path) -> None:
    import torch

    from aiflywheel.tasks.text_classification.models.encoding import load_tokenizer

    texts = [text for text, _ in news_rows(24, seed=5)]
    model = _tiny(world)._new_model().eval()
    tokenizer = load_tokenizer(str(world / "tiny-bert"))
    cache, pooled = layer_cache.encode_frozen(
        model, tokenizer, texts, layer=1, prefix="", max_length=32,
        directory=tmp_path, key="k", pooled=True,
    )  # fmt: skip
    assert len(cache) == len(texts) and (tmp_path / "k.f16").is_file()
    assert cache.states.dtype == np.float16
    batch = layer_cache.pad_cached(
        [{"inputs_embeds": cache.rows(i), "labels": 0} for i in range(len(texts))]
    )
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        full = model(**inputs).logits
        with layer_cache.top_layers_view(model, 1):
            assert len(model.bert.encoder.layer) == 1
            top = model(
                inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"]
            ).logits
        assert len(model.bert.encoder.layer) == 2  # the full model is back
        again = model(**inputs).logits
    assert torch.allclose(full, top, atol=1e-2)  # fp16 cache
    assert torch.equal(full, again)
    # The same pass gives the head's embeddings: those of TextEncoder.
    from aiflywheel.tasks.text_classification.models.encoding import TextEncoder

    expected = TextEncoder(str(world / "tiny-bert"), max_length=32).encode(texts)
    assert np.allclose(pooled, expected, atol=1e-4)
    assert layer_cache.open_cache(tmp_path, "k").offsets.tolist() == cache.offsets.tolist()
    assert layer_cache.open_cache(tmp_path, "missing") is None


def test_length_buckets_sort_within_buckets_and_shuffle_batches() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 200, size=1000).tolist()
    order = layer_cache.bucketed_order(lengths, 8, seed=1, bucket_batches=5)
    assert sorted(order) == list(range(1000))
    batches = [order[i : i + 8] for i in range(0, 1000, 8)]
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in batches])
    random_spread = np.mean([np.ptp(rng.choice(lengths, 8)) for _ in range(125)])
    assert spread < random_spread / 3  # batches hold similar lengths
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts)  # not shortest-first: the batches are shuffled
    assert order != layer_cache.bucketed_order(lengths, 8, seed=2, bucket_batches=5)
    sampler = layer_cache.BucketSampler(lengths, 8, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(1000))


def test_cached_finetune_trains_saves_a_full_model_and_reuses_the_cache(
    world: Path, tmp_path: Path
) -> None:
    from aiflywheel.tasks.text_classification.models.finetuned import FinetuneSettings

    rows = news_rows(200, seed=1)
    texts, labels = [t for t, _ in rows], [label for _, label in rows]
    settings = FinetuneSettings(
        freeze_layers=1, epochs=15, learning_rate=3e-3, batch_size=16, seed=2,
        early_stopping_patience=5, warmup_ratio=0,
    )  # fmt: skip
    model = _tiny(world, settings)
    model.fit(
        texts[:160], labels[:160], val_texts=texts[160:], val_labels=labels[160:],
        work_dir=tmp_path / "work",
    )  # fmt: skip
    assert model.best_val_macro_f1 > 0.8 and model.steps > 0
    cached = sorted((tmp_path / "work" / layer_cache.CACHE_DIR).glob("*.f16"))
    assert len(cached) == 2  # train and validation
    model.save(tmp_path / "model")
    loaded = reload_verified(model, tmp_path / "model", texts[160:], what="model")
    assert len(loaded._model.bert.encoder.layer) == 2  # a normal full model

    # A second run over the same texts (a resumed one) reads the cache: no tokenizer,
    # no encoder pass.
    probe = _tiny(world, settings)
    reused = probe.frozen_cache(probe._new_model(), None, texts[:160], tmp_path / "work")
    assert len(reused) == 160


def test_stacked_model_fits_predicts_and_round_trips(world: Path, tmp_path: Path) -> None:
    from aiflywheel.tasks.text_classification.models.stacked import (
        StackedClassifier,
        out_of_fold_log_proba,
    )

    rows = news_rows(180, seed=2)
    texts, labels = [t for t, _ in rows], [label for _, label in rows]
    model = StackedClassifier("tiny", str(world / "tiny-bert"), max_length=32, folds=3, seed=1)
    model.fit(texts[:150], labels[:150], val_texts=texts[150:], val_labels=labels[150:])
    proba = model.predict_proba(texts[150:])
    assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1)
    predicted = [model.labels[i] for i in proba.argmax(axis=1)]
    assert np.mean([p == y for p, y in zip(predicted, labels[150:], strict=True)]) > 0.8
    model.save(tmp_path / "stacked")
    for name in ("classifier.json", "head.safetensors", "baseline/vocabulary.json"):
        assert (tmp_path / "stacked" / name).is_file(), name
    assert not list((tmp_path / "stacked").rglob("*.pkl"))
    loaded = reload_verified(model, tmp_path / "stacked", texts, what="model")
    assert loaded.kind == "stacked" and type(load_classifier(tmp_path / "stacked")) is type(model)

    # Out of fold: the unique index word in every text cannot leak its own label.
    y = np.array([model.labels.index(label) for label in labels[:150]])
    oof = out_of_fold_log_proba(texts[:150], y, 3, folds=3, seed=1, analyzer="word")
    inside = np.log(model.baseline_.predict_proba(texts[:150]))
    assert oof.shape == (150, 3)
    assert np.mean(oof.max(axis=1)) < np.mean(inside.max(axis=1))


def _recipe(world: Path, tmp_path: Path, budget: float) -> Path:
    path = tmp_path / "auto.yaml"
    path.write_text(
        RECIPE.format(data=world / "news.csv", model=world / "tiny-bert", budget=budget),
        encoding="utf-8",
    )
    return path


def test_auto_tries_candidates_in_order_and_serves_the_best(
    world: Path, tmp_path: Path, monkeypatch
) -> None:
    lines: list[str] = []
    recipe = load_recipe(_recipe(world, tmp_path, 10))
    result = train_feature(recipe, store=open_store(), settings=get_settings(), report=lines.append)
    table = result.metrics["auto"]["candidates"]
    assert [row["method"] for row in table] == ["tfidf", "head", "stacked", "finetune"]
    assert all(row["val_macro_f1"] is not None for row in table)
    best = max(row["val_macro_f1"] for row in table)
    chosen = next(row for row in table if row["val_macro_f1"] == best)  # cheapest of ties
    assert result.method == chosen["method"]
    for row in table:
        assert f"{row['method']} {row['val_macro_f1']:.4f}" in result.method_reason
    assert result.method_reason in lines
    assert "How auto chose" in (result.run_dir / "report.html").read_text(encoding="utf-8")
    if result.method == "tfidf":
        assert "no candidate beat the TF-IDF baseline" in result.metrics["verdict"]
    model = load("tiny-news")
    assert model.predict(["股票 market profit"])[0].label == "finance"
    manifest = json.loads((result.run_dir / "model" / "classifier.json").read_text())
    assert manifest["kind"] == {
        "tfidf": "tfidf", "head": "encoder_head", "stacked": "stacked", "finetune": "finetuned"
    }[result.method]  # fmt: skip


def test_auto_decides_on_validation_and_says_why() -> None:
    candidates = [
        auto.Candidate("tfidf", 0.80, 1.0),
        auto.Candidate("head", 0.78, 20.0),
        auto.Candidate("stacked", 0.85, 3.0),
        auto.Candidate("finetune", None, 0.0, "skipped: one epoch needs ~900 s"),
    ]
    decided = auto._decide(candidates, 64, {}, lambda _: None)
    assert decided.method == "stacked"
    assert decided.reason == (
        "auto: stacked has the best validation macro-F1 (tfidf 0.8000 (1 s); head 0.7800 "
        "(20 s); stacked 0.8500 (3 s); finetune skipped: one epoch needs ~900 s) -> stacked"
    )
    candidates[2].val_macro_f1 = 0.80  # a tie with the baseline: the baseline serves
    decided = auto._decide(candidates, 64, {}, lambda _: None)
    assert decided.method == "tfidf" and "-> the baseline serves" in decided.reason


@pytest.mark.parametrize("step_seconds", [30.0, 2000.0])
def test_auto_fits_finetune_epochs_in_the_budget_by_counted_steps(
    world: Path, tmp_path: Path, monkeypatch, step_seconds: float
) -> None:
    # A measured step this slow leaves room for a fraction of the recipe's epochs (or none).
    monkeypatch.setattr(auto, "cached_step_seconds", lambda *a, **k: step_seconds)
    recipe = load_recipe(_recipe(world, tmp_path, 10))
    result = train_feature(recipe, store=open_store(), settings=get_settings())
    plan = result.metrics["auto"]["plan"]
    row = result.metrics["auto"]["candidates"][-1]
    rows = result.metrics["train_rows"]
    steps_per_epoch = -(-rows // 16)
    if step_seconds > 100:
        assert row["val_macro_f1"] is None and row["note"].startswith("skipped: one epoch")
        return
    epochs = plan["finetune_epochs"]
    assert 1 <= epochs < 2  # of the 2 the recipe asks for
    # The plan's arithmetic on the monkeypatched step cost (no clock is read here).
    planned_cost, budget = epochs * plan["epoch_estimate_seconds"], plan["budget_seconds"]
    assert planned_cost <= budget
    log = [
        json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()
    ]
    counted = max(entry["step"] for entry in log)
    assert counted <= int(np.ceil(epochs * steps_per_epoch))


def test_split_column_keeps_the_data_s_own_splits() -> None:
    from aiflywheel.data.dataset import Dataset, Record
    from aiflywheel.data.split import split_dataset
    from aiflywheel.errors import SplitError
    from aiflywheel.recipe import SplitConfig

    names = ["train"] * 6 + ["dev"] * 2 + ["test"] * 2
    rows = Dataset(
        Record(f"r{i}", f"text number {i}", "ab"[i % 2], {"part": name})
        for i, name in enumerate(names)
    )
    result = split_dataset(rows, SplitConfig(column="part"), seed=0)
    assert [len(result.parts[n]) for n in ("train", "val", "test")] == [6, 2, 2]
    assert [r.id for r in result.parts["val"]] == ["r6", "r7"]
    bad = Dataset([*rows, Record("x", "another text", "a", {"part": "holdout"})])
    with pytest.raises(SplitError, match="row x has 'holdout'; expected one of train, val, dev"):
        split_dataset(bad, SplitConfig(column="part"), seed=0)


def test_auto_serves_the_baseline_and_says_why_when_the_budget_is_spent(
    world: Path, tmp_path: Path
) -> None:
    recipe = load_recipe(_recipe(world, tmp_path, 0.001))  # 0.06 s: gone before the encoder
    result = train_feature(recipe, store=open_store(), settings=get_settings())
    assert result.method == "tfidf"
    table = result.metrics["auto"]["candidates"]
    assert [row["method"] for row in table] == ["tfidf", "head", "stacked", "finetune"]
    assert all(
        row["note"].startswith("skipped: the data check and the baseline used") for row in table[1:]
    )
    assert "no candidate beat the TF-IDF baseline" in result.metrics["verdict"]
    assert load("tiny-news").predict(["股票 market profit"])[0].label == "finance"
