"""Masked-language-model (MLM) training of a BERT encoder on domain text.

``train_mlm(source, texts, heldout, out_dir, settings)`` continues pre-training of the
encoder in ``source`` and writes, under ``out_dir``::

    encoder/        the adapted model (BertForMaskedLM: encoder + MLM head, safetensors,
                    tokenizer); a classifier loads its encoder with from_pretrained
    mlm.json        figures: held-out masked-token loss and perplexity before and after,
                    steps, seconds, how the head was initialized, vocabulary sizes
    mlm_log.jsonl   training loss every few steps
    checkpoint/     while training: trainable weights + AdamW moments (safetensors) and
                    the step, elapsed time and held-out loss before (JSON)

A finished ``out_dir`` (``mlm.json`` + ``encoder/``) is reused as is; Ctrl-C (SIGINT)
saves a checkpoint at the end of the step and raises ``TrainingInterrupted``; calling
again resumes there (the time budget counts the seconds of every attempt). Batches and
masks are drawn from ``(seed, step)``, so a resumed run sees the same data as an
uninterrupted one.

Masking: whole words are masked together, 15% of the maskable tokens by default:
Chinese text is cut into words with jieba, other text into ``\\w+`` runs and single
punctuation marks; a token belongs to the word holding its last character (so a
SentencePiece ``▁word`` token joins its word). Of the masked tokens 80% become the mask
token, 10% a random token of the domain vocabulary, 10% stay unchanged. Prefix tokens
(the e5 ``query: ``) and special tokens are never masked.

Head: a checkpoint without MLM head weights (the converted e5-small, all-MiniLM-L6-v2)
gets one whose decoder is the tied input embedding matrix, output bias zero, and the
transform's dense layer initialized to the identity (LayerNorm at unit gain, zero bias).

Speed: the loss is computed only at masked positions, and against a restricted
vocabulary: the token ids that occur in the domain texts (for e5-small a few thousand
of 250,037 rows). The word embeddings (and so the tied decoder) stay frozen, as
fine-tuning keeps them by default; the encoder layers, position embeddings, transform
and output bias learn. The held-out loss is measured against the full vocabulary.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import re
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import ModelError, TrainingInterrupted, require_module
from aiflywheel.files import write_json_atomic

Report = Callable[[str], None]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+|[^\w\s]")
IGNORE = -100
HEAD_INIT = (
    "decoder tied to the input embeddings, output bias zero, transform dense layer "
    "identity-initialized (LayerNorm unit gain)"
)


# ------------------------------------------------------------------- whole-word groups


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text``: jieba words when it holds Chinese
    characters, else ``\\w+`` runs and single punctuation marks; whitespace is no word."""
    if _CJK.search(text):
        jieba = require_module(
            "jieba", what="whole-word masking of Chinese text", install="pip install jieba"
        )
        jieba.setLogLevel(logging.WARNING)
        return [(start, end) for word, start, end in jieba.tokenize(text) if word.strip()]
    return [match.span() for match in _WORD.finditer(text)]


def word_groups(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], first_char: int = 0
) -> list[list[int]]:
    """Token positions grouped by the word holding each token's last character.

    ``offsets`` are the tokenizer's character offsets, ``spans`` the word spans shifted to
    the same string; tokens ending before ``first_char`` (a prefix), special tokens (empty
    offsets) and tokens ending in whitespace belong to no group and are never masked.
    """
    starts = [s for s, _ in spans]
    groups: dict[int, list[int]] = {}
    for position, (start, end) in enumerate(offsets):
        if end <= start or end - 1 < first_char:
            continue
        word = bisect.bisect_right(starts, end - 1) - 1
        if word < 0 or end - 1 >= spans[word][1]:
            continue
        groups.setdefault(word, []).append(position)
    return list(groups.values())


@dataclass
class EncodedText:
    """One tokenized text and its maskable token positions, grouped by word."""

    ids: list[int]
    groups: list[list[int]]


def encode_texts(
    tokenizer, texts: Sequence[str], *, prefix: str = "", max_length: int = 128
) -> list[EncodedText]:
    """Tokenize ``prefix + text`` (cut to ``max_length``) and group tokens by word."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("MLM pre-training needs a fast tokenizer (character offsets)")
    encoded = tokenizer(
        [prefix + t for t in texts],
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
    )
    rows = []
    for text, ids, offsets in zip(
        texts, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        spans = [(s + len(prefix), e + len(prefix)) for s, e in word_spans(text)]
        rows.append(EncodedText(list(ids), word_groups(offsets, spans, len(prefix))))
    return rows


# ---------------------------------------------------------------------------- masking


def mask_row(
    row: EncodedText,
    rng: np.random.Generator,
    *,
    probability: float,
    mask_id: int,
    random_ids: np.ndarray,
) -> tuple[list[int], list[int]]:
    """Whole-word masking of one row: (input ids, labels with ``IGNORE`` where unmasked).

    Words are taken in random order while the masked tokens stay within
    ``probability`` x the maskable tokens (at least one word); each chosen token becomes
    ``mask_id`` (80%), a random id from ``random_ids`` (10%) or stays (10%).
    """
    ids = list(row.ids)
    labels = [IGNORE] * len(ids)
    if not row.groups:
        return ids, labels
    maskable = sum(len(g) for g in row.groups)
    budget = max(1, round(probability * maskable))
    chosen: list[int] = []
    for index in rng.permutation(len(row.groups)):
        group = row.groups[int(index)]
        if chosen and len(chosen) + len(group) > budget:
            continue
        chosen.extend(group)
        if len(chosen) >= budget:
            break
    draws = rng.random(len(chosen))
    for position, draw in zip(chosen, draws, strict=True):
        labels[position] = ids[position]
        if draw < 0.8:
            ids[position] = mask_id
        elif draw < 0.9:
            ids[position] = int(random_ids[rng.integers(len(random_ids))])
    return ids, labels


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Pad masked rows into (input_ids, attention_mask, labels) tensors."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.tensor(row_labels)
    return input_ids, attention, labels


# ------------------------------------------------------------------------------ model


def load_mlm_model(source: str):
    """``(BertForMaskedLM, head_init)``: the encoder of ``source`` with its MLM head, or
    with a head built from the tied embeddings (``HEAD_INIT``) when it has none."""
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {source!r}: {str(exc).splitlines()[0]}") from None
    if config.model_type != "bert":
        raise ModelError(
            f"MLM pre-training supports BERT encoders (minilm, e5-small); {source!r} is a "
            f"{config.model_type!r} model"
        )
    model, info = transformers.BertForMaskedLM.from_pretrained(source, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if "predictions" in k]
    head = model.cls.predictions
    embeddings = model.get_input_embeddings()
    if model.get_output_embeddings().weight is not embeddings.weight:
        model.get_output_embeddings().weight = embeddings.weight
    if not missing:
        return model, "loaded from the checkpoint"
    with torch.no_grad():
        dense = head.transform.dense
        dense.weight.copy_(torch.eye(dense.weight.shape[0], dtype=dense.weight.dtype))
        dense.bias.zero_()
        head.transform.LayerNorm.weight.fill_(1.0)
        head.transform.LayerNorm.bias.zero_()
        head.bias.zero_()
    return model, HEAD_INIT


def masked_loss(model, input_ids, attention_mask, labels, vocab=None, remap=None):
    """Cross-entropy at the masked positions only; against the ``vocab`` rows of the
    decoder when given (``remap`` maps a token id to its row in ``vocab``)."""
    import torch

    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    where = labels != IGNORE
    states = model.cls.predictions.transform(hidden[where])
    target = labels[where]
    weight = model.get_output_embeddings().weight
    bias = model.cls.predictions.bias
    if vocab is not None:
        weight, bias, target = weight[vocab], bias[vocab], remap[target]
    logits = states @ weight.T + bias
    return torch.nn.functional.cross_entropy(logits, target)


def heldout_loss(model, rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> float:
    """Mean masked-token loss over ``rows`` (already masked) against the full vocabulary."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            input_ids, attention, labels = collate(rows[start : start + 32], pad_id)
            n = int((labels != IGNORE).sum())
            if n:
                total += float(masked_loss(model, input_ids, attention, labels)) * n
                count += n
    return total / max(count, 1)


# --------------------------------------------------------------------------- training


@dataclass
class MlmSettings:
    """The knobs of one MLM training (from the recipe's ``train.pretrain.mlm``)."""

    minutes: float = 10.0
    max_steps: int | None = None
    mask_probability: float = 0.15
    batch_size: int = 16
    learning_rate: float = 5e-5
    max_length: int = 128
    warmup_steps: int = 20
    checkpoint_every_seconds: float = 120.0
    log_every_steps: int = 10
    seed: int = 0


@dataclass
class MlmResult:
    """What ``train_mlm`` wrote and measured (also ``mlm.json``)."""

    encoder_dir: str
    train_texts: int
    heldout_texts: int
    steps: int
    seconds: float
    heldout_loss_before: float
    heldout_loss_after: float
    head_init: str
    vocabulary: int
    domain_vocabulary: int
    reused: bool = False

    @property
    def perplexity_before(self) -> float:
        return math.exp(self.heldout_loss_before)

    @property
    def perplexity_after(self) -> float:
        return math.exp(self.heldout_loss_after)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "perplexity_before": self.perplexity_before,
            "perplexity_after": self.perplexity_after,
        }


def train_mlm(
    source: str,
    texts: Sequence[str],
    heldout: Sequence[str],
    out_dir: str | Path,
    settings: MlmSettings,
    *,
    prefix: str = "",
    report: Report = lambda _: None,
) -> MlmResult:
    """MLM training of ``source`` on ``texts``, judged on ``heldout``; see the module
    docstring for what lands in ``out_dir``, resuming and interrupting."""
    import torch
    from safetensors.torch import load_file

    from aiflywheel.tasks.text_classification.models.encoding import load_tokenizer

    out_dir = Path(out_dir)
    done = out_dir / "mlm.json"
    if done.is_file() and (out_dir / "encoder").is_dir():
        figures = json.loads(done.read_text(encoding="utf-8"))
        figures = {k: v for k, v in figures.items() if k in MlmResult.__dataclass_fields__}
        report(f"reusing the adapted encoder in {out_dir / 'encoder'}")
        return MlmResult(**{**figures, "reused": True})
    if not texts:
        raise ModelError("MLM pre-training has no texts to train on")
    s = settings
    tokenizer = load_tokenizer(source)
    if tokenizer.mask_token_id is None:
        raise ModelError(f"the tokenizer of {source!r} has no mask token")
    model, head_init = load_mlm_model(source)
    model.get_input_embeddings().weight.requires_grad = False
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    report(f"tokenizing {len(texts):,} domain texts for MLM (whole-word groups)")
    rows = encode_texts(tokenizer, texts, prefix=prefix, max_length=s.max_length)
    held = encode_texts(tokenizer, heldout, prefix=prefix, max_length=s.max_length)
    vocab_ids = sorted({i for r in (*rows, *held) for i in r.ids} | {tokenizer.mask_token_id})
    special = set(tokenizer.all_special_ids)
    random_ids = np.array([i for i in vocab_ids if i not in special], dtype=np.int64)
    if not len(random_ids):
        raise ModelError("the domain texts tokenize to special tokens only")
    vocab = torch.tensor(vocab_ids, dtype=torch.long)
    remap = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab_ids))
    mask = {
        "probability": s.mask_probability,
        "mask_id": tokenizer.mask_token_id,
        "random_ids": random_ids,
    }
    fixed = np.random.default_rng([s.seed, 2**31 - 1])
    held_masked = [mask_row(r, fixed, **mask) for r in held]

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(trainable.values(), lr=s.learning_rate, weight_decay=0.01)
    checkpoint = out_dir / "checkpoint"
    state: dict[str, Any] = {"step": 0, "seconds": 0.0}
    if (checkpoint / "state.json").is_file():
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        _restore(load_file(str(checkpoint / "weights.safetensors")), trainable, optimizer)
        report(f"resuming MLM training at step {state['step']} ({state['seconds']:.0f} s done)")
    if "loss_before" not in state:
        state["loss_before"] = heldout_loss(model, held_masked, pad_id) if held else math.nan
        report(f"held-out masked-token loss before: {state['loss_before']:.3f}")

    steps_per_epoch = math.ceil(len(rows) / s.batch_size)
    budget = s.minutes * 60
    stop = {"requested": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    log = out_dir / "mlm_log.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    started, saved = time.perf_counter(), time.perf_counter()
    base_seconds = float(state["seconds"])
    model.train()
    try:
        while state["step"] < (s.max_steps or math.inf):
            elapsed = base_seconds + time.perf_counter() - started
            if elapsed >= budget:
                break
            step = int(state["step"])
            epoch, batch = divmod(step, steps_per_epoch)
            order = np.random.default_rng([s.seed, epoch]).permutation(len(rows))
            picked = order[batch * s.batch_size : (batch + 1) * s.batch_size]
            rng = np.random.default_rng([s.seed, step, 1])
            masked = [mask_row(rows[int(i)], rng, **mask) for i in picked]
            input_ids, attention, labels = collate(masked, pad_id)
            for group in optimizer.param_groups:
                group["lr"] = s.learning_rate * min(1.0, (step + 1) / max(1, s.warmup_steps))
            if bool((labels != IGNORE).any()):
                loss = masked_loss(model, input_ids, attention, labels, vocab, remap)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step % s.log_every_steps == 0:
                    _append(log, {"step": step, "loss": float(loss.detach()), "seconds": elapsed})
            state["step"] = step + 1
            now = time.perf_counter()
            state["seconds"] = base_seconds + now - started
            if stop["requested"] or now - saved >= s.checkpoint_every_seconds:
                _save_checkpoint(checkpoint, trainable, optimizer, state)
                saved = now
            if stop["requested"]:
                raise TrainingInterrupted(
                    f"MLM pre-training interrupted at step {state['step']}; checkpoint saved "
                    f"in {checkpoint}: run the same command again to resume"
                )
    finally:
        signal.signal(signal.SIGINT, previous)
    loss_after = heldout_loss(model, held_masked, pad_id) if held else math.nan
    report(
        f"MLM: {state['step']} steps in {state['seconds'] / 60:.1f} min; held-out loss "
        f"{state['loss_before']:.3f} -> {loss_after:.3f}"
    )
    encoder = out_dir / "encoder"
    partial = out_dir / "encoder.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial), safe_serialization=True)
    tokenizer.save_pretrained(str(partial))
    shutil.rmtree(encoder, ignore_errors=True)
    partial.rename(encoder)
    result = MlmResult(
        encoder_dir=str(encoder),
        train_texts=len(rows),
        heldout_texts=len(held),
        steps=int(state["step"]),
        seconds=round(float(state["seconds"]), 2),
        heldout_loss_before=float(state["loss_before"]),
        heldout_loss_after=float(loss_after),
        head_init=head_init,
        vocabulary=int(model.config.vocab_size),
        domain_vocabulary=len(vocab_ids),
    )
    write_json_atomic(done, result.to_json())
    shutil.rmtree(checkpoint, ignore_errors=True)
    return result


def _append(path: Path, entry: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def _save_checkpoint(folder: Path, trainable: dict, optimizer, state: dict[str, Any]) -> None:
    """Trainable weights and AdamW moments as safetensors plus the state, swapped in whole."""
    from safetensors.torch import save_file

    tensors = {f"param.{n}": p.detach().contiguous() for n, p in trainable.items()}
    for name, parameter in trainable.items():
        moments = optimizer.state.get(parameter)
        if not moments:
            continue
        tensors[f"exp_avg.{name}"] = moments["exp_avg"].contiguous()
        tensors[f"exp_avg_sq.{name}"] = moments["exp_avg_sq"].contiguous()
        tensors[f"adam_step.{name}"] = moments["step"].reshape(1).float()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "weights.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _restore(tensors: dict, trainable: dict, optimizer) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in trainable.items():
            parameter.copy_(tensors[f"param.{name}"])
            if f"exp_avg.{name}" in tensors:
                optimizer.state[parameter] = {
                    "step": tensors[f"adam_step.{name}"].reshape(()).clone(),
                    "exp_avg": tensors[f"exp_avg.{name}"].clone(),
                    "exp_avg_sq": tensors[f"exp_avg_sq.{name}"].clone(),
                }


__all__ = [
    "HEAD_INIT",
    "EncodedText",
    "MlmResult",
    "MlmSettings",
    "encode_texts",
    "load_mlm_model",
    "mask_row",
    "masked_loss",
    "train_mlm",
    "word_groups",
    "word_spans",
]
