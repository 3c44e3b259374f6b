"""SmolLM2-135M-Instruct (packaged GGUF) tuned with LoRA for a few steps on the shipped
help-center replies: its chat template is used, the loss falls, the adapter reloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflywheel.models.causal_lm import (
    IGNORE,
    Sampling,
    TrainSettings,
    TunedLM,
    encode,
    fine_tune,
    has_chat_template,
    load_causal_lm,
)
from aiflywheel.tasks.text_generation.config import GenerationConfig
from aiflywheel.tasks.text_generation.data import demo_path, read_rows


@pytest.mark.packaged
def test_smollm2_lora_steps_on_the_demo_replies(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(2)
    config = GenerationConfig(source="demo:help-center-replies")
    rows, counts = read_rows(demo_path(config.source), config)
    assert counts["languages"] == {"en": 58, "zh": 58}
    english = [r.example for r in rows if r.language == "en"][:8]
    model, tokenizer, _how = load_causal_lm("smollm2-135m")
    assert has_chat_template(tokenizer)
    ids, labels = encode(tokenizer, english[0], chat=True)
    assert "<|im_start|>assistant" in tokenizer.decode(ids[: labels.count(IGNORE)])
    settings = TrainSettings(
        max_steps=4, batch_size=4, learning_rate=1e-3, max_length=160, epochs=10, seed=0
    )
    model, log = fine_tune(model, tokenizer, english, chat=True, settings=settings)
    assert log.steps == 4 and log.losses[-1] < log.losses[0]
    tuned = TunedLM(model, tokenizer, base="smollm2-135m", method="lora", chat=True)
    tuned.save(tmp_path / "model")
    reloaded = TunedLM.load(tmp_path / "model")
    [(text, tokens)] = reloaded.generate(english[0], sampling=Sampling(max_new_tokens=8))
    assert text and 0 < tokens <= 8
