"""The shared causal-LM core: loss on the response only, packing, resume, DPO, save/load;
the nearest-neighbour baseline and the text metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflywheel.errors import ModelError, TrainingInterrupted
from aiflywheel.metrics.generation import chrf, mean_ci, paired_diff, repetition, rouge_l
from aiflywheel.models.causal_lm import (
    IGNORE,
    Example,
    PreferencePair,
    Sampling,
    TrainSettings,
    TunedLM,
    dpo_train,
    encode,
    fine_tune,
    load_causal_lm,
    pack,
    preference_accuracy,
)
from aiflywheel.tasks.text_generation.baseline import NearestResponse

PAIRS = [
    Example(prompt="where is my order 1", response="your order ships in two days"),
    Example(
        prompt="how do i get a refund 1", response="refunds take five days after we get the item"
    ),
    Example(prompt="do you ship abroad 1", response="we ship to ten countries"),
]


@pytest.mark.parametrize("kind", ["chat", "plain"])
def test_the_prompt_is_masked_and_the_response_ends_with_eos(tiny_lms, kind: str) -> None:
    _model, tokenizer, how = load_causal_lm(str(tiny_lms[kind]))
    assert how == "folder"
    ids, labels = encode(tokenizer, PAIRS[0], chat=kind == "chat")
    masked = labels.count(IGNORE)
    assert 0 < masked < len(ids) and labels[:masked] == [IGNORE] * masked
    response = tokenizer.decode(ids[masked:], skip_special_tokens=True)
    assert "your order ships in two days" in response
    if kind == "plain":
        assert ids[-1] == tokenizer.eos_token_id


def test_packing_fills_sequences_without_splitting_rows() -> None:
    items = [([1] * 5, [1] * 5), ([2] * 4, [2] * 4), ([3] * 7, [3] * 7), ([4] * 2, [4] * 2)]
    packed = pack(items, 10)
    assert [len(ids) for ids, _ in packed] == [9, 9]
    assert sum(len(ids) for ids, _ in packed) == 18


def test_training_learns_resumes_from_a_checkpoint_and_saves_an_adapter(
    tiny_lms, tmp_path: Path, monkeypatch
) -> None:
    import os
    import signal

    import torch

    settings = TrainSettings(
        epochs=30, batch_size=3, learning_rate=0.01, checkpoint_every=5, seed=0, max_length=64
    )
    model, tokenizer, _ = load_causal_lm(str(tiny_lms["chat"]))
    checkpoints = tmp_path / "ck"
    # Ctrl-C during step 7: the step finishes, a checkpoint is written, the error names it.
    real_clip = torch.nn.utils.clip_grad_norm_
    steps = []

    def clip(params, norm):
        steps.append(1)
        if len(steps) == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real_clip(params, norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 7.*run the same command"):
        fine_tune(model, tokenizer, PAIRS, chat=True, settings=settings, checkpoint_dir=checkpoints)
    monkeypatch.undo()
    model, tokenizer, _ = load_causal_lm(str(tiny_lms["chat"]))
    model, log = fine_tune(
        model, tokenizer, PAIRS, chat=True, settings=settings, checkpoint_dir=checkpoints
    )
    assert log.resumed_from == 7 and log.steps == 30
    assert log.losses[-1] < log.losses[0]
    tuned = TunedLM(model, tokenizer, base=str(tiny_lms["chat"]), method="lora", chat=True)
    tuned.save(tmp_path / "model")
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "model").rglob("*.bin"))
    loaded = TunedLM.load(tmp_path / "model")
    greedy = Sampling(max_new_tokens=8)
    assert loaded.generate(PAIRS[0], sampling=greedy) == tuned.generate(PAIRS[0], sampling=greedy)
    sampled = Sampling(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=5)
    assert loaded.generate(PAIRS[1], n=3, sampling=sampled) == loaded.generate(
        PAIRS[1], n=3, sampling=sampled
    )


def test_dpo_moves_the_model_towards_the_chosen_response(tiny_lms) -> None:
    model, tokenizer, _ = load_causal_lm(str(tiny_lms["plain"]))
    pairs = [
        PreferencePair(p, chosen=p.response, rejected="we ship to ten countries") for p in PAIRS[:2]
    ]
    before = preference_accuracy(model, tokenizer, pairs, chat=False)
    settings = TrainSettings(epochs=40, batch_size=2, learning_rate=0.02, seed=0)
    model, log = dpo_train(model, tokenizer, pairs, chat=False, settings=settings, beta=0.5)
    assert log.losses[-1] < log.losses[0] < 0.70  # starts at log(2) = 0.693
    assert preference_accuracy(model, tokenizer, pairs, chat=False) == [1, 1]
    assert before != [1, 1] or log.losses[-1] < 0.5
    with pytest.raises(ModelError, match="no preference pairs"):
        dpo_train(model, tokenizer, [], chat=False, settings=settings)


def test_nearest_neighbour_baseline_and_metrics(tmp_path: Path) -> None:
    baseline = NearestResponse().fit(
        ["where is my order", "怎么退款", "do you ship abroad"],
        ["ships in two days", "五天内退款", "ten countries"],
    )
    assert baseline.predict(["where's my order?", "我要退款", "ship abroad?"]) == [
        "ships in two days",
        "五天内退款",
        "ten countries",
    ]
    baseline.save(tmp_path)
    assert NearestResponse.load(tmp_path).predict(["退款"]) == ["五天内退款"]
    assert chrf("abc def", "abc def") == pytest.approx(100.0)
    assert rouge_l("退款 五天", "五天内退款") > 0 and rouge_l("x", "y") == 0.0
    assert repetition("a b c a b c a b c") > 0.5 and repetition("a b c d e") == 0.0
    lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0], n_resamples=200)
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    diff = paired_diff([1, 1, 1, 0], [0, 0, 1, 0], n_resamples=200)
    assert diff["diff"] == pytest.approx(0.5) and diff["rows"] == 4


def test_the_gate_refuses_a_candidate_that_prefers_the_chosen_no_more_often(tiny_lms) -> None:
    from aiflywheel.recipe import parse_recipe
    from aiflywheel.tasks.text_generation.data import Row
    from aiflywheel.tasks.text_generation.retrain import compare

    recipe = parse_recipe(
        {
            "feature": "replies",
            "task": "text_generation",
            "generation": {
                "source": "x.jsonl",
                "max_length": 64,
                "sampling": {"max_new_tokens": 4, "max_prompts": 2},
                "gate": {"min_preference_gain": 1.0},
            },
            "evaluate": {"bootstrap_resamples": 100},
        }
    )
    model, tokenizer, _ = load_causal_lm(str(tiny_lms["chat"]))
    lm = TunedLM(model, tokenizer, base="tiny", chat=True, max_length=64)
    test = [Row(f"r{i}", e, "en") for i, e in enumerate(PAIRS)]
    pairs = [PreferencePair(PAIRS[0], "your order ships in two days", "we ship to ten countries")]
    result = compare(lm, lm, test, pairs, recipe)
    assert not result.passed
    assert "preference accuracy gain failed (+0.00 points (needs at least +1 points)" in (
        result.reason
    )
    assert result.champion["perplexity"] == result.candidate["perplexity"]
