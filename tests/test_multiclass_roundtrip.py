"""Multi-class models survive save -> load: the served model is the evaluated one."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.core.versions import load
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import ModelError
from aiflywheel.files import write_arrays_atomic
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification.models.base import load_classifier
from aiflywheel.tasks.text_classification.models.roundtrip import (
    compare_predictions,
    reload_verified,
)
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert, news_rows  # noqa: E402

RECIPE = """\
feature: tiny-news
seed: 3
data: {{source: {data}, columns: {{text: text, label: label}}}}
model: {{name: {model}, method: {method}}}
train: {{epochs: 6, batch_size: 16, learning_rate: 0.003, freeze_embeddings: false}}
evaluate: {{bootstrap_resamples: 100, explain_mistakes: 0}}
"""

LOAD_AND_PREDICT = """
import json, sys
from aiflywheel.tasks.text_classification.models.base import load_classifier
model = load_classifier(sys.argv[1])
texts = json.loads(sys.stdin.read())
print(json.dumps({"labels": model.labels, "proba": model.predict_proba(texts).tolist()}))
"""


@pytest.fixture(scope="module")
def news_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("news-world")
    rows = news_rows(240)
    build_tiny_bert(root / "tiny-bert", [text for text, _ in rows])
    with (root / "news.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return root


def test_fortran_ordered_arrays_come_back_as_written(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    coef = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert not coef.flags.c_contiguous
    write_arrays_atomic(tmp_path / "w.safetensors", {"coef": coef})
    assert np.array_equal(load_file(str(tmp_path / "w.safetensors"))["coef"], coef)


def _fit(kind: str, world: Path, work_dir: Path):
    rows = news_rows(240)
    texts, labels = [t for t, _ in rows], [label for _, label in rows]
    if kind == "tfidf":
        from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline

        return TfidfBaseline(seed=0).fit(texts, labels)
    if kind == "head":
        from aiflywheel.tasks.text_classification.models.encoder_head import EncoderHeadClassifier

        return EncoderHeadClassifier("tiny", str(world / "tiny-bert")).fit(texts, labels)
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )

    model = FinetunedClassifier(
        "tiny",
        str(world / "tiny-bert"),
        max_length=32,
        settings=FinetuneSettings(epochs=2, batch_size=16, learning_rate=0.003),
    )
    return model.fit(
        texts[:200],
        labels[:200],
        val_texts=texts[200:],
        val_labels=labels[200:],
        work_dir=work_dir,
    )


@pytest.mark.parametrize("kind", ["tfidf", "head", "finetune"])
def test_three_class_models_predict_the_same_after_loading_in_a_fresh_process(
    kind: str, news_world: Path, tmp_path: Path
) -> None:
    model = _fit(kind, news_world, tmp_path / "work")
    assert len(model.labels) == 3
    model.save(tmp_path / "model")
    texts = [t for t, _ in news_rows(30, seed=99)]
    expected = np.asarray(model.predict_proba(texts))
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(tmp_path / "model")],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout)
    assert loaded["labels"] == model.labels
    proba = np.asarray(loaded["proba"])
    assert list(proba.argmax(axis=1)) == list(expected.argmax(axis=1))
    assert np.abs(proba - expected).max() < 1e-4


def test_round_trip_check_names_the_difference() -> None:
    same = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = ["a", "b", "c"]
    assert compare_predictions(same, same.copy(), labels, labels) is None
    flipped = same[:, [1, 0, 2]]
    assert "1 of 2 sample texts changed label (text 0: 'a' -> 'b')" in compare_predictions(
        same, flipped, labels, labels
    )
    nudged = same + np.array([[0.01, -0.01, 0.0], [0, 0, 0]])
    assert "differ by up to 0.01" in compare_predictions(same, nudged, labels, labels)
    assert "labels" in compare_predictions(same, same, labels, ["a", "c", "b"])
    tie = np.array([[0.5, 0.5, 0.0]])
    assert compare_predictions(tie, tie[:, [1, 0, 2]], labels, labels) is None


def test_a_corrupted_save_fails_the_run_and_registers_nothing(
    news_world: Path, tmp_path: Path, monkeypatch
) -> None:
    from aiflywheel.tasks.text_classification.models.encoder_head import EncoderHeadClassifier

    real_save = EncoderHeadClassifier.save

    def scrambling_save(self, directory):  # the round-1 defect: coef written transposed
        real_save(self, directory)
        from safetensors.numpy import load_file

        path = Path(directory) / "head.safetensors"
        weights = load_file(str(path))
        coef = weights["coef"]
        weights["coef"] = np.ascontiguousarray(coef.T).reshape(coef.shape)
        write_arrays_atomic(path, weights)

    monkeypatch.setattr(EncoderHeadClassifier, "save", scrambling_save)
    recipe_path = tmp_path / "news.yaml"
    recipe_path.write_text(
        RECIPE.format(data=news_world / "news.csv", model=news_world / "tiny-bert", method="head"),
        encoding="utf-8",
    )
    store = open_store()
    with pytest.raises(ModelError, match="does not reproduce the trained one"):
        train_feature(load_recipe(recipe_path), store=store, settings=get_settings())
    assert store.list_model_versions("tiny-news") == []
    (run, _), *_ = store.list_runs()
    assert run.status == "failed" and "does not reproduce" in run.error


@pytest.mark.parametrize("method", ["head", "finetune"])
def test_served_accuracy_equals_the_reported_one(
    method: str, news_world: Path, tmp_path: Path
) -> None:
    recipe_path = tmp_path / "news.yaml"
    recipe_path.write_text(
        RECIPE.format(data=news_world / "news.csv", model=news_world / "tiny-bert", method=method),
        encoding="utf-8",
    )
    result = train_feature(load_recipe(recipe_path), store=open_store(), settings=get_settings())
    test = Dataset.from_jsonl(result.run_dir / "splits" / "test.jsonl")
    served = load("tiny-news", result.version)  # (a winning baseline is registered too)
    predicted = [p.label for p in served.predict(test.texts)]
    accuracy = float(np.mean([p == r.label for p, r in zip(predicted, test, strict=True)]))
    registered = open_store().get_model_version("tiny-news", result.version).metrics
    assert accuracy == pytest.approx(registered["accuracy"], abs=1e-9)
    baseline = load_classifier(result.run_dir / "baseline")
    assert reload_verified(baseline, result.run_dir / "baseline", test.texts, what="baseline")
