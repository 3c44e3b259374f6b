"""Training flow on tiny models built from config: train, evaluate, register, load, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiflywheel.cli import main
from aiflywheel.core.versions import load
from aiflywheel.errors import ModelError, NotFoundError
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402

RECIPE = """\
feature: tiny-sentiment
seed: 7
data: {{source: {data}, columns: {{text: text, label: label, meta: [channel]}}}}
model: {{name: {model}, method: {method}}}
train: {{epochs: {epochs}, batch_size: 16, learning_rate: 0.003, early_stopping_patience: 4,
        freeze_embeddings: false, eval_every_steps: {every}}}
evaluate: {{bootstrap_resamples: 200, explain_mistakes: 3, min_slice_rows: 5}}
"""


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-world")
    rows = sentiment_rows(300)
    build_tiny_bert(root / "tiny-bert", [text for text, _ in rows])
    with (root / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "channel"])
        for i, (text, label) in enumerate(rows):
            writer.writerow([text, label, ("app", "web", "email")[i % 3]])
    return root


def _recipe(
    world: Path, tmp_path: Path, method: str, *, epochs: int = 12, every: str = "null"
) -> Path:
    path = tmp_path / f"{method}.yaml"
    path.write_text(
        RECIPE.format(
            data=world / "reviews.csv",
            model=world / "tiny-bert",
            method=method,
            epochs=epochs,
            every=every,
        ),
        encoding="utf-8",
    )
    return path


def test_finetune_trains_evaluates_registers_and_loads(
    tiny_world: Path, tmp_path: Path, capsys
) -> None:
    recipe = load_recipe(_recipe(tiny_world, tmp_path, "finetune"))
    result = train_feature(recipe, store=open_store(), settings=get_settings())
    assert result.version == 1 and result.method == "finetune"
    for name in (
        "model/classifier.json",
        "model/model.safetensors",
        "baseline/weights.safetensors",
        "metrics.json",
        "report.html",
        "train_log.jsonl",
        "splits/test.jsonl",
    ):
        assert (result.run_dir / name).is_file(), name
    assert not (result.run_dir / "checkpoints").exists()
    metrics = json.loads((result.run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"]["metrics"]["macro_f1"] > 0.8  # the tiny task is learnable
    assert metrics["version"] == "v1" and metrics["verdict"]
    assert metrics["model"]["macro_f1_ci"][0] <= metrics["model"]["metrics"]["macro_f1"]
    assert "channel" in metrics["slices"]
    assert metrics["mistakes"] == [] or metrics["mistakes"][0]["attributions"]
    assert "<svg" in (result.run_dir / "report.html").read_text(encoding="utf-8")

    model = load("tiny-sentiment")
    assert model.version == 1 and model.labels == ["negative", "positive"]
    predictions = model.predict(["很好 great product", "很差 terrible 退货"])
    assert [p.label for p in predictions] == ["positive", "negative"]
    assert abs(sum(predictions[0].probabilities.values()) - 1) < 1e-5
    assert any(score != 0 for _, score in model.explain("很好 great product"))

    assert main(["models", "list"]) == 0
    assert main(["models", "show", "tiny-sentiment:1"]) == 0
    assert main(["predict", "tiny-sentiment", "很好 great", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "tiny-sentiment" in out and '"label": "positive"' in out and "top_tokens" in out
    (run, _), *_ = open_store().list_runs()
    assert run.kind == "train" and run.status == "succeeded" and run.summary["version"] == 1


@pytest.mark.parametrize("method", ["head", "lora"])
def test_head_and_lora_methods(method: str, tiny_world: Path, tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tiny_world, tmp_path, method))
    result = train_feature(recipe, store=open_store(), settings=get_settings())
    assert result.method == method
    model = load("tiny-sentiment")
    assert len(model.predict(["很好 great"])) == 1
    assert result.metrics["baseline"]["name"].startswith("tfidf")


def test_auto_method_measures_and_says_why(tiny_world: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    recipe = load_recipe(_recipe(tiny_world, tmp_path, "auto", epochs=2))
    result = train_feature(recipe, store=open_store(), settings=get_settings(), report=lines.append)
    assert result.method in ("tfidf", "head", "stacked", "finetune")
    assert "auto: no GPU; trying tfidf, head, stacked" in lines[1]
    assert any(line.startswith("auto: encoder ") and "tokens/s here" in line for line in lines)
    assert result.method_reason.startswith("auto: ") and result.method_reason in lines


def test_predict_bad_inputs(tiny_world: Path, tmp_path: Path) -> None:
    train_feature(
        load_recipe(_recipe(tiny_world, tmp_path, "head")),
        store=open_store(),
        settings=get_settings(),
    )
    model = load("tiny-sentiment")
    for bad, message in [
        ([], "at least one text, got an empty list"),
        (None, "got None"),
        (["ok", 3], "item 1 is int"),
        ("just a string", "got a single string"),
    ]:
        with pytest.raises(ModelError, match=message):
            model.predict(bad)
    with pytest.raises(NotFoundError, match="has no version 9; versions: 1"):
        load("tiny-sentiment:9")
    with pytest.raises(NotFoundError, match="unknown feature 'nope'"):
        load("nope")


def test_unknown_model_alias_and_empty_validation(tiny_world: Path, tmp_path: Path, capsys) -> None:
    path = _recipe(tiny_world, tmp_path, "head")
    code = main(["train", str(path), "--model", "bert-nonexistent"])
    err = capsys.readouterr().err
    assert code == 2 and "known alias (minilm, e5-small)" in " ".join(err.split())
    assert "FLYWHEEL_ALLOW_DOWNLOAD=1" in " ".join(err.split())
    path.write_text(path.read_text() + "split: {train: 0.8, val: 0, test: 0.2}\n")
    code = main(["train", str(path)])
    assert code == 2 and "validation split is empty" in " ".join(capsys.readouterr().err.split())


def _flywheel(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    script = Path(sys.executable).parent / "flywheel"
    return subprocess.Popen(
        [str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_sigint_saves_a_checkpoint_and_the_same_command_resumes(
    tiny_world: Path, tmp_path: Path
) -> None:
    recipe = _recipe(tiny_world, tmp_path, "finetune", epochs=12)
    straight_home, resumed_home = tmp_path / "straight", tmp_path / "resumed"
    straight = _flywheel(straight_home, "train", str(recipe))
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    first = _flywheel(resumed_home, "train", str(recipe))
    feature_dir = resumed_home / "runs" / "tiny-sentiment"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(
        feature_dir.glob(".train-*/checkpoints/checkpoint-*")
    ):
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output
    assert "interrupted: training interrupted at step" in output and "Traceback" not in output
    assert list(feature_dir.glob(".train-*/checkpoints/checkpoint-*"))

    second = _flywheel(resumed_home, "train", str(recipe))
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    assert "resuming from the checkpoints" in output

    def final_f1(home: Path) -> float:
        (metrics_file,) = (home / "runs" / "tiny-sentiment").glob("*/metrics.json")
        return json.loads(metrics_file.read_text(encoding="utf-8"))["model"]["metrics"]["macro_f1"]

    assert abs(final_f1(resumed_home) - final_f1(straight_home)) <= 0.05


def test_freeze_layers_cannot_freeze_every_layer(tiny_world: Path, tmp_path: Path, capsys) -> None:
    path = _recipe(tiny_world, tmp_path, "finetune", epochs=1)
    path.write_text(path.read_text().replace("freeze_embeddings: false", "freeze_layers: 2"))
    code = main(["train", str(path)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "freeze_layers=2 would freeze all 2 layers; use at most 1" in err


def test_sampled_model_is_compared_with_a_baseline_on_the_full_split(
    tiny_world: Path, tmp_path: Path
) -> None:
    path = _recipe(tiny_world, tmp_path, "head")
    path.write_text(path.read_text().replace("freeze_embeddings: false", "max_train_samples: 60"))
    result = train_feature(load_recipe(path), store=open_store(), settings=get_settings())
    assert result.metrics["train_rows"] == 60
    assert result.metrics["baseline"]["train_rows"] > 200


def test_cross_validation_reports_mean_and_spread(tiny_world: Path, tmp_path: Path) -> None:
    path = _recipe(tiny_world, tmp_path, "head")
    text = path.read_text().replace(
        "evaluate: {",
        "split: {train: 0.8, val: 0.1, test: 0.1, k_folds: 3}\nevaluate: {cross_validation: true, ",
    )
    path.write_text(text)
    result = train_feature(load_recipe(path), store=open_store(), settings=get_settings())
    cv = result.metrics["cross_validation"]
    assert cv["k"] == 3 and len(cv["per_fold"]) == 3
    assert cv["macro_f1_std"] >= 0 and 0.5 < cv["macro_f1_mean"] <= 1


def test_cross_validation_needs_folds(tiny_world: Path, tmp_path: Path, capsys) -> None:
    path = _recipe(tiny_world, tmp_path, "head")
    path.write_text(path.read_text().replace("evaluate: {", "evaluate: {cross_validation: true, "))
    assert main(["train", str(path)]) == 2
    assert "needs split.k_folds" in " ".join(capsys.readouterr().err.split())


def test_lora_without_peft_names_the_extra(
    tiny_world: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import importlib

    real_import = importlib.import_module

    def no_peft(name, *args, **kwargs):
        if name == "peft":
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_peft)
    assert main(["train", str(_recipe(tiny_world, tmp_path, "lora", epochs=1))]) == 2
    assert "pip install 'aiflywheel[lora]'" in " ".join(capsys.readouterr().err.split())


def test_a_failed_resume_keeps_the_checkpoints(tiny_world: Path, tmp_path: Path) -> None:
    from aiflywheel.tasks.text_classification.train import work_key

    path = _recipe(tiny_world, tmp_path, "finetune", epochs=1)
    path.write_text(path.read_text().replace(str(tiny_world / "tiny-bert"), "no-such-model"))
    recipe = load_recipe(path)
    work_dir = get_settings().runs_dir / recipe.feature / f".train-{work_key(recipe)}.partial"
    (work_dir / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(ModelError, match="not a known alias"):
        train_feature(recipe, store=open_store(), settings=get_settings())
    assert (work_dir / "checkpoints" / "checkpoint-5").is_dir()
    (run, _), *_ = open_store().list_runs()
    assert run.status == "failed"


def test_a_model_that_loses_to_the_baseline_leaves_the_baseline_registered_and_servable(
    tiny_world: Path, tmp_path: Path, capsys
) -> None:
    from fastapi.testclient import TestClient

    from aiflywheel.core.versions import promote
    from aiflywheel.serve.app import create_app
    from aiflywheel.serve.config import ServeConfig

    path = _recipe(tiny_world, tmp_path, "finetune", epochs=1)
    path.write_text(path.read_text().replace("learning_rate: 0.003", "learning_rate: 0.0000001"))
    assert main(["train", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "v2 is the TF-IDF baseline, registered because it won" in out

    store = open_store()
    model, baseline = (
        row
        for row, _ in sorted(
            store.list_model_versions("tiny-sentiment"), key=lambda pair: pair[0].version
        )
    )
    assert (
        model.metrics["beats_baseline"] is False and "keep the baseline" in model.metrics["verdict"]
    )
    assert baseline.metrics["is_baseline"] and baseline.method.startswith("tfidf")
    assert baseline.metrics["macro_f1"] > model.metrics["macro_f1"]
    assert Path(baseline.model_path).name == "baseline"

    promote(store, "tiny-sentiment", baseline.version, actor="pm")  # no force needed
    key, _ = store.create_api_key("client", "app")
    with TestClient(create_app(ServeConfig(), store)) as client:
        answer = client.post(
            "/v1/classify",
            json={"feature": "tiny-sentiment", "texts": ["很好 great product"]},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["version"] == baseline.version
    assert body["predictions"][0]["label"] == "positive"
