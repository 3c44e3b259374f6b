"""Compression on tiny fine-tuned models: ONNX, int8, fp16, pruning; measured, gated, served."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.cli.compress import compress_command
from aiflywheel.compress import (
    compress_version,
    convert_fp16,
    fp16_unavailable_reason,
    measure,
    unlabeled_texts,
)
from aiflywheel.compress.distill import (
    DistillSettings,
    distill_student,
    distillation_loss,
    student_layers,
)
from aiflywheel.compress.onnx import export_onnx, fuse_transformer, quantize_int8
from aiflywheel.core.versions import load, promote
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import ModelError
from aiflywheel.recipe import load_recipe, parse_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification.models.base import load_classifier
from aiflywheel.tasks.text_classification.retrain import feedback_dataset
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402

RECIPE = """\
feature: tiny-sentiment
seed: 7
data: {{source: {data}, columns: {{text: text, label: label, meta: [channel]}}}}
model: {{name: {model}, method: {method}}}
train: {{epochs: 5, batch_size: 16, learning_rate: 0.003, early_stopping_patience: 2,
        freeze_embeddings: false, threads: 1}}
evaluate: {{bootstrap_resamples: 200, explain_mistakes: 2, min_slice_rows: 5}}
compress: {compress}
"""
FAST = "{latency_texts: 16, threads: 1}"
FAST_WITH_FP16 = "{variants: [onnx, int8, fp16], latency_texts: 16, threads: 1}"


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compress-world")
    rows = sentiment_rows(300)
    build_tiny_bert(root / "tiny-bert", [text for text, _ in rows])
    with (root / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "channel"])
        for i, (text, label) in enumerate(rows):
            writer.writerow([text, label, ("app", "web", "email")[i % 3]])
    return root


def _recipe(world: Path, tmp_path: Path, *, method: str = "finetune", compress: str = FAST):
    path = tmp_path / f"recipe-{method}-{abs(hash(compress))}.yaml"
    path.write_text(
        RECIPE.format(
            data=world / "reviews.csv", model=world / "tiny-bert", method=method, compress=compress
        ),
        encoding="utf-8",
    )
    return path


def _train(world: Path, tmp_path: Path, **kwargs):
    recipe = load_recipe(_recipe(world, tmp_path, **kwargs))
    return train_feature(recipe, store=open_store(), settings=get_settings())


@pytest.fixture
def cli(monkeypatch):
    """``aiflywheel.cli.main`` with ``compress`` registered (if cli.py does not yet)."""
    from aiflywheel import cli as cli_module

    if not any(c.name == "compress" for c in cli_module.app.registered_commands):
        monkeypatch.setattr(
            cli_module.app, "registered_commands", list(cli_module.app.registered_commands)
        )
        cli_module.app.command("compress")(compress_command)
    return cli_module.main


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_onnx_and_int8_variants_are_measured_gated_registered_and_served(
    tiny_world: Path, tmp_path: Path, cli, capsys
) -> None:
    trained = _train(tiny_world, tmp_path, compress=FAST_WITH_FP16)
    capsys.readouterr()
    assert cli(["compress", "tiny-sentiment:1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "compression.json" in out and "int8" in out and "pass" in out
    gpu = fp16_unavailable_reason() is None
    if not gpu:
        assert "skipped fp16: no GPU here" in out

    store = open_store()
    onnx_row, int8_row = (store.get_model_version("tiny-sentiment", v) for v in (2, 3))
    assert (onnx_row.method, int8_row.method) == ("finetune+onnx", "finetune+int8")
    for row, variant in ((onnx_row, "onnx"), (int8_row, "int8")):
        m = row.metrics
        assert row.status == "candidate" and m["gate"]["passed"] is True
        assert m["parent_version"] == 1 and m["variant"] == variant
        assert m["size_bytes"] > 0 and m["throughput_per_s"] > 0
        for batch in ("batch_1", "batch_32"):
            assert 0 < m["latency_ms"][batch]["p50"] <= m["latency_ms"][batch]["p95"]
        assert abs(m["macro_f1_change_points"]) <= 1.0 and m["agreement"] >= 0.98
        assert m["macro_f1"] > 0.8 and m["parent"]["macro_f1"] > 0.8
    assert int8_row.metrics["size_bytes"] < onnx_row.metrics["size_bytes"]

    (table_file,) = (get_settings().runs_dir / "tiny-sentiment").glob("*/compression.json")
    table = json.loads(table_file.read_text(encoding="utf-8"))
    assert [r["variant"] for r in table["rows"]] == ["parent", "onnx", "int8"] + ["fp16"] * gpu
    assert [r["version"] for r in table["rows"]][:3] == [1, 2, 3]
    assert [s["variant"] for s in table["skipped"]] == ([] if gpu else ["fp16"])
    variant_dir = Path(int8_row.model_path).parent
    for name in ("metrics.json", "report.html", "splits/test.jsonl", "model/model.int8.onnx"):
        assert (variant_dir / name).is_file(), name
    frozen = (trained.run_dir / "splits" / "test.jsonl").read_text(encoding="utf-8")
    assert (variant_dir / "splits" / "test.jsonl").read_text(encoding="utf-8") == frozen
    assert json.loads((variant_dir / "metrics.json").read_text())["version"] == "v3"

    # fp32 ONNX agrees with torch on every test text; int8 with fp32 on at least 98%.
    test = Dataset.from_jsonl(trained.run_dir / "splits" / "test.jsonl").texts
    torch_proba = load_classifier(trained.run_dir / "model").predict_proba(test)
    onnx_proba = load_classifier(onnx_row.model_path).predict_proba(test)
    int8_proba = load_classifier(int8_row.model_path).predict_proba(test)
    assert np.array_equal(torch_proba.argmax(1), onnx_proba.argmax(1))
    assert np.abs(torch_proba - onnx_proba).max() < 1e-4
    assert np.mean(int8_proba.argmax(1) == onnx_proba.argmax(1)) >= 0.98
    # fp16 (a GPU variant) converts and agrees here too, run on the CPU.
    half = convert_fp16(onnx_row.model_path, tmp_path / "fp16")
    assert np.array_equal(half.predict_proba(test).argmax(1), onnx_proba.argmax(1))

    # The served path: the registry loads the int8 version into ONNX Runtime.
    served = load("tiny-sentiment", 3)
    assert served.classifier.kind == "onnx" and served.classifier.precision == "int8"
    # It quantized the fused graph: one Attention operator per layer (2 in the tiny BERT).
    assert served.classifier.quantization["fused"]["Attention"] == 2
    predictions = served.predict(["很好 great product", "很差 terrible 退货"])
    assert [p.label for p in predictions] == ["positive", "negative"]
    # The tiny model does not beat its baseline: promoting it is an override, with a reason.
    promote(store, "tiny-sentiment", 3, actor="pm", force=True, reason="serve the int8 variant")
    assert load("tiny-sentiment").version == 3
    # A retrain from the compressed champion finds the parent's frozen splits.
    recipe = load_recipe(_recipe(tiny_world, tmp_path))
    data = feedback_dataset(store, "tiny-sentiment", recipe, variant_dir)
    assert data.parts["test"].texts == test

    # Loading an ONNX model needs neither torch nor transformers.
    script = (
        "import sys\n"
        "from aiflywheel.tasks.text_classification.models.base import load_classifier\n"
        f"model = load_classifier({int8_row.model_path!r})\n"
        "print(model.predict(['很好 great'])[0].label, 'torch' in sys.modules, "
        "'transformers' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["positive", "False", "False"], done.stderr

    # A compressed variant is not compressed again.
    assert cli(["compress", "tiny-sentiment:2"]) == 2
    err = _err(capsys)
    assert "is a 'onnx' model" in err and "already a compressed variant of v1" in err


def test_fused_export_keeps_the_logits_of_the_plain_export(
    tiny_world: Path, tmp_path: Path
) -> None:
    trained = _train(tiny_world, tmp_path)
    torch_model = load_classifier(trained.run_dir / "model")
    plain = export_onnx(torch_model, tmp_path / "plain")
    fused = export_onnx(torch_model, tmp_path / "fused", fused=True)
    assert plain.quantization is None
    assert fused.quantization["fused"]["Attention"] == 2  # one per layer
    assert fused.quantization["fused"]["EmbedLayerNormalization"] == 1
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "fused" / "model.onnx")).graph.node}
    assert "Attention" in ops and "Softmax" not in ops  # the attention is one operator
    # Same logits on texts of every length, padded together (batch 32) or alone (batch 1).
    test = Dataset.from_jsonl(trained.run_dir / "splits" / "test.jsonl").texts
    test = [*test, "很好 " * 60]  # longer than max_length: truncation agrees too
    for batch_size in (32, 1):
        a = plain.predict_proba(test, batch_size=batch_size)
        b = fused.predict_proba(test, batch_size=batch_size)
        assert np.abs(a - b).max() < 1e-4
    assert np.abs(torch_model.predict_proba(test) - fused.predict_proba(test)).max() < 1e-4
    # int8 of the fused graph keeps the note and agrees with fp32 on the tiny model.
    int8 = quantize_int8(tmp_path / "fused", tmp_path / "int8")
    assert int8.quantization["fused"]["Attention"] == 2
    agree = np.mean(int8.predict_proba(test).argmax(1) == b.argmax(1))
    assert agree >= 0.95
    # A graph with no attention pattern ONNX Runtime knows is refused, not half-fused.
    with pytest.raises(ModelError, match="fused no attention"):
        fuse_transformer(tmp_path / "int8" / "model.int8.onnx", num_heads=2, hidden_size=32)


def test_a_destructive_prune_is_refused_by_the_gate(
    tiny_world: Path, tmp_path: Path, cli, capsys
) -> None:
    _train(tiny_world, tmp_path)
    # Half of the layers gone, and a recovery fine-tune whose learning rate (0.5, from the
    # recipe's train section) is far too high: a genuinely wrecked variant.
    destructive = _recipe(
        tiny_world,
        tmp_path,
        compress="{variants: [prune], prune_keep_layers: 1, prune_recovery_epochs: 1, "
        "latency_texts: 8, threads: 1}",
    )
    destructive.write_text(
        destructive.read_text().replace("learning_rate: 0.003", "learning_rate: 0.5")
    )
    capsys.readouterr()
    assert cli(["compress", "tiny-sentiment", "--recipe", str(destructive)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "rejected" in out and "REJECTED" in out

    store = open_store()
    row = store.get_model_version("tiny-sentiment", 2)
    assert row.status == "rejected" and row.method == "finetune+prune1"
    gate = row.metrics["gate"]
    assert gate["passed"] is False
    assert "more than the allowed 1 (compress.max_macro_f1_drop)" in gate["reason"]
    assert row.metrics["macro_f1_change_points"] < -1.0
    assert json.loads((Path(row.model_path) / "config.json").read_text())["num_hidden_layers"] == 1
    assert load_classifier(row.model_path).kind == "finetuned"

    assert cli(["promote", "tiny-sentiment:2"]) == 2
    assert "did not pass the promotion gate (macro-F1 drops" in _err(capsys)
    assert store.champion("tiny-sentiment") is None


def test_prune_with_recovery_keeps_the_model_usable(tiny_world: Path, tmp_path: Path) -> None:
    compress = (
        "{variants: [prune], prune_keep_layers: 1, prune_recovery_epochs: 1, latency_texts: 8, "
        "threads: 1}"
    )
    _train(tiny_world, tmp_path, compress=compress)
    result = compress_version("tiny-sentiment", 1, store=open_store(), settings=get_settings())
    row = result.variants["prune"]
    assert row["macro_f1"] > 0.8 and row["runtime"] == "torch"
    assert row["macro_f1_change_points"] > -5
    assert (result.run_dir / "prune" / "recovery_log.jsonl").is_file()
    assert not (result.run_dir / "prune" / ".prune-work").exists()


def test_bad_inputs_give_one_line_errors(
    tiny_world: Path, tmp_path: Path, cli, capsys, monkeypatch
) -> None:
    assert cli(["compress", "nope"]) == 2
    assert "unknown feature 'nope'" in _err(capsys)

    head = _train(tiny_world, tmp_path, method="head").version
    assert cli(["compress", "tiny-sentiment:9"]) == 2
    assert "has no version 9; versions: 1" in _err(capsys)
    assert cli(["compress", f"tiny-sentiment:{head}"]) == 2
    err = _err(capsys)
    assert "is a 'encoder_head' model" in err and "needs a fine-tuned transformer" in err

    finetuned = _train(tiny_world, tmp_path).version  # fine-tuned, 2 layers
    registered = len(open_store().list_model_versions("tiny-sentiment"))
    for keep, message in [
        (0, "compress.prune_keep_layers=0 would remove every one of the model's 2 layers"),
        (2, "compress.prune_keep_layers=2 removes nothing: the model has 2 layers"),
    ]:
        recipe = _recipe(
            tiny_world, tmp_path, compress=f"{{variants: [prune], prune_keep_layers: {keep}}}"
        )
        assert cli(["compress", f"tiny-sentiment:{finetuned}", "--recipe", str(recipe)]) == 2
        err = _err(capsys)
        assert "RecipeError" in err and message in err and "keep between 1 and 1" in err

    import importlib

    real_import = importlib.import_module

    def no_onnxruntime(name, *args, **kwargs):
        if name.startswith("onnxruntime"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_onnxruntime)
    assert cli(["compress", f"tiny-sentiment:{finetuned}"]) == 2
    err = _err(capsys)
    assert "MissingExtraError" in err and "pip install 'aiflywheel[onnx]'" in err
    assert len(open_store().list_model_versions("tiny-sentiment")) == registered  # none added
    (run, _), *_ = open_store().list_runs()
    assert run.kind == "train"  # the bad requests failed before starting a run


def test_measure_reports_size_latency_and_throughput(tiny_world: Path, tmp_path: Path) -> None:
    trained = _train(tiny_world, tmp_path, method="head")
    model = load_classifier(trained.run_dir / "model")
    figures = measure(
        model, ["很好 great", "很差 terrible"] * 4, model_dir=trained.run_dir / "model"
    )
    assert figures.size_bytes > 0 and figures.texts == 8 and figures.batches == 10
    assert 0 < figures.b1_p50_ms <= figures.b1_p95_ms
    assert 0 < figures.b32_p50_ms <= figures.b32_p95_ms and figures.throughput > 0
    with pytest.raises(ModelError, match="at least one text"):
        measure(model, [], model_dir=trained.run_dir / "model")


def test_distilled_student_and_its_int8_are_trained_gated_and_registered(
    tiny_world: Path, tmp_path: Path
) -> None:
    import torch

    extra = tmp_path / "unlabeled.csv"
    unlabeled_rows = [text for text, _ in sentiment_rows(500)[300:]]
    with extra.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in unlabeled_rows)
    compress = (
        f"{{variants: [distill, distill-int8], distill_layers: 1, distill_epochs: 3, "
        f"distill_learning_rate: 0.003, distill_unlabeled: {extra}, distill_unlabeled_rows: 150, "
        "latency_texts: 8, threads: 1}"
    )
    trained = _train(tiny_world, tmp_path, compress=compress)
    recipe = load_recipe(_recipe(tiny_world, tmp_path, compress=compress))

    # The extra texts never include a near-duplicate of a split's row.
    texts = unlabeled_texts(recipe, trained.run_dir / "splits", base_dir=tmp_path)
    split_texts = {
        r.text
        for n in ("train", "val", "test")
        for r in Dataset.from_jsonl(trained.run_dir / "splits" / f"{n}.jsonl")
    }
    assert 0 < len(texts) <= 150 and not split_texts & set(texts)

    result = compress_version("tiny-sentiment", 1, store=open_store(), settings=get_settings())
    store = open_store()
    student = store.get_model_version("tiny-sentiment", result.variants["distill"]["version"])
    quantized = store.get_model_version(
        "tiny-sentiment", result.variants["distill-int8"]["version"]
    )
    assert (student.method, quantized.method) == ("finetune+distill1", "finetune+distill1+int8")
    config = json.loads((Path(student.model_path) / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    for row in (student, quantized):
        assert row.metrics["parent_version"] == 1 and row.metrics["macro_f1"] > 0.8
        assert row.status == ("candidate" if row.metrics["gate"]["passed"] else "rejected")
    served = load("tiny-sentiment", quantized.version)
    assert served.classifier.kind == "onnx" and served.classifier.precision == "int8"
    tries = served.classifier.quantization["tries"]
    assert tries[0]["fp32_feed_forward"] is False and 0 <= tries[0]["validation_agreement"] <= 1
    assert result.variants["distill-int8"]["size_bytes"] < result.variants["distill"]["size_bytes"]
    assert not (result.run_dir / ".fused-student").exists()
    assert not (result.run_dir / ".export-student").exists()
    assert not (result.run_dir / ".distill-work").exists()  # the Trainer's checkpoints

    # The student is trained by the shared Trainer loop: seeded (the same seed gives the
    # same weights), one report line per epoch, the best epoch's weights kept.
    teacher = load_classifier(trained.run_dir / "model")
    train = Dataset.from_jsonl(trained.run_dir / "splits" / "train.jsonl")
    val = Dataset.from_jsonl(trained.run_dir / "splits" / "val.jsonl")
    settings = DistillSettings(
        keep_layers=1,
        epochs=2,
        batch_size=16,
        learning_rate=0.003,
        seed=3,
        unlabeled_texts=texts[:20],
    )
    lines: list[str] = []
    students = [
        distill_student(
            teacher,
            tmp_path / f"student-{i}" / "model",
            train=train,
            val=val,
            settings=settings,
            report=lines.append,
        )
        for i in range(2)
    ]
    first, second = (s._model.state_dict() for s in students)
    assert all(torch.equal(first[k], second[k]) for k in first)
    epochs = [line for line in lines if line.startswith("student epoch")]
    assert [line.split(":")[0] for line in epochs] == ["student epoch 1", "student epoch 2"] * 2
    best = max(float(line.rsplit(" ", 1)[1]) for line in epochs[:2])
    assert students[0].best_val_macro_f1 == pytest.approx(best, abs=1e-4)
    assert not (tmp_path / "student-0" / ".distill-work").exists()


def test_student_layers_and_the_distillation_loss() -> None:
    import torch

    assert student_layers(12, 4) == [2, 5, 8, 11] and student_layers(12, 6)[-1] == 11
    assert student_layers(2, 1) == [1]
    with pytest.raises(ModelError, match="between 1 and 11 of 12 layers, not 12"):
        student_layers(12, 12)
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    teacher = torch.softmax(logits, dim=-1)
    unlabeled = torch.tensor([-1, -1])
    same = distillation_loss(logits, teacher, unlabeled, temperature=2.0, soft_weight=1.0)
    assert abs(float(same)) < 1e-6  # a student that matches its teacher has nothing to learn
    flipped = distillation_loss(
        logits.flip(-1), teacher, unlabeled, temperature=2.0, soft_weight=1.0
    )
    assert float(flipped) > 0.1
    labels = torch.tensor([0, -1])
    mixed = distillation_loss(logits, teacher, labels, temperature=2.0, soft_weight=0.5)
    hard = torch.nn.functional.cross_entropy(logits[:1], labels[:1])
    assert abs(float(mixed) - 0.5 * float(hard)) < 1e-5  # only the labeled row counts


# -- the packaged e5-small model on the zh demo --------------------------------------------


@pytest.mark.packaged
def test_e5_small_int8_agrees_with_fp32_on_the_zh_test_split() -> None:
    recipe = parse_recipe(
        {
            "feature": "zh-compress",
            "seed": 3,
            "data": {"source": "demo:zh-reviews", "sample": 1600},
            "clean": {"min_chars": 4},
            "split": {"train": 0.6, "val": 0.1, "test": 0.3},
            "model": {"name": "e5-small", "method": "finetune", "max_length": 64},
            "train": {
                "epochs": 1,
                "batch_size": 16,
                "learning_rate": 0.0002,
                "freeze_layers": 8,
            },
            "evaluate": {"bootstrap_resamples": 200, "explain_mistakes": 2, "slices": []},
            "compress": {"variants": ["onnx", "int8"], "latency_texts": 32},
        }
    )
    started = time.perf_counter()
    trained = train_feature(recipe, store=open_store(), settings=get_settings())
    trained_at = time.perf_counter()
    result = compress_version("zh-compress", 1, store=open_store(), settings=get_settings())
    done = time.perf_counter()
    test = Dataset.from_jsonl(trained.run_dir / "splits" / "test.jsonl").texts
    store = open_store()
    onnx_dir, int8_dir = (
        store.get_model_version("zh-compress", result.variants[v]["version"]).model_path
        for v in ("onnx", "int8")
    )
    fp32 = load_classifier(onnx_dir).predict_proba(test).argmax(1)
    int8 = load_classifier(int8_dir).predict_proba(test).argmax(1)
    agreement = float(np.mean(fp32 == int8))
    summary = {
        "test_rows": len(test),
        "int8_vs_fp32_agreement": agreement,
        "train_s": round(trained_at - started, 1),
        "compress_s": round(done - trained_at, 1),
        "rows": result.rows,
    }
    sys.stderr.write(json.dumps(summary, default=str) + "\n")
    assert agreement >= 0.98
    assert result.variants["onnx"]["agreement"] == 1.0
    assert result.variants["int8"]["size_bytes"] < result.variants["onnx"]["size_bytes"] / 2
