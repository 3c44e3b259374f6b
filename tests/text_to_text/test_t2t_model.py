"""The LSTM encoder-decoder: learns a tiny mapping, decodes greedy and beam, saves and
loads bit-for-bit, and resumes an interrupted training from its checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiflywheel.errors import ModelError, NotFittedError, TrainingInterrupted
from aiflywheel.tasks.text_to_text.model import Seq2SeqTranslator
from aiflywheel.tasks.text_to_text.tokens import join, mode_for, split

sys.path.insert(0, str(Path(__file__).parent))
from t2t_world import KNOWN, gloss, strings  # noqa: E402

SOURCES = strings(KNOWN, 90, seed=2)
TARGETS = [gloss(s) for s in SOURCES]


def tiny() -> Seq2SeqTranslator:
    return Seq2SeqTranslator(source_mode="char", target_mode="word", embedding=16, hidden=32)


def fit(model: Seq2SeqTranslator, **kw) -> Seq2SeqTranslator:
    import torch

    torch.set_num_threads(1)
    options = {"epochs": 25, "batch_size": 16, "learning_rate": 0.01, "patience": 25, "seed": 0}
    return model.fit(SOURCES[:80], TARGETS[:80], **{**options, **kw})


def test_tokens_by_language() -> None:
    assert mode_for("zh", "auto") == "char" and mode_for("en", "auto") == "word"
    assert split("不 错", "char") == ["不", "\u2581", "错"]
    assert join(split("It's fine, (really)!", "word"), "word") == "It's fine, (really)!"


def test_learns_decodes_and_round_trips(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        tiny().translate(["ab"])
    model = fit(tiny(), val_sources=SOURCES[80:], val_targets=TARGETS[80:])
    greedy = [t.text for t in model.translate(SOURCES[:20], beam_size=1)]
    assert sum(g == t for g, t in zip(greedy, TARGETS[:20], strict=True)) >= 15
    beam = model.translate(["abc"], beam_size=3, alternatives=2)[0]
    assert beam.text == "one two three" and len(beam.alternatives) == 2
    assert all(beam.score >= score for _, score in beam.alternatives)
    model.save(tmp_path / "m")
    again = Seq2SeqTranslator.load(tmp_path / "m")
    assert [t.text for t in again.translate(SOURCES[:20], beam_size=1)] == greedy
    with pytest.raises(ModelError, match="holds no seq2seq model"):
        Seq2SeqTranslator.load(tmp_path)


def test_decoding_never_emits_padding_unknown_or_start_tokens() -> None:
    import torch

    model = fit(tiny(), epochs=1)
    vocab = model.target_vocab
    with torch.no_grad():  # a model that prefers <unk> above every real word
        model.net.out.bias[vocab.index["<unk>"]] = 1e4
        model.net.out.bias[vocab.index["<pad>"]] = 1e4
    for beam_size in (1, 3):
        outputs = model.translate(SOURCES[:5], beam_size=beam_size)
        assert all(t.text.strip() for t in outputs), outputs


def test_an_interrupted_fit_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"

    def stop_at_epoch_3(line: str) -> None:
        if line.startswith("epoch 3:"):
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="resumes it"):
        fit(tiny(), epochs=6, checkpoint_dir=checkpoints, report=stop_at_epoch_3)
    lines: list[str] = []
    resumed = fit(tiny(), epochs=6, checkpoint_dir=checkpoints, report=lines.append)
    assert lines[0].startswith("resuming from epoch 2")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    straight = fit(tiny(), epochs=6)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx(
        [h["train_loss"] for h in straight.history], abs=1e-3
    )
