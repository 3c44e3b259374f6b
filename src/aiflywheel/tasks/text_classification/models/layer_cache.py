"""Frozen-layer caching: the bottom layers of a partly frozen encoder run once per text.

With ``train.freeze_layers: k`` (and frozen embeddings) the embeddings and the bottom k
layers never change during fine-tuning, so their output for a text is the same in every
epoch. ``encode_frozen`` computes it once (in eval mode, length-sorted batches, no
gradients) and writes it to a memory-mapped fp16 file under the run's work folder; the
same pass also gives the mean-pooled sentence embedding of the top layer (what the
``head`` and ``stacked`` methods need), so ``auto`` encodes every text only once.

Training then runs only the top layers: ``top_layers_view`` turns the model into one
whose embeddings pass ``inputs_embeds`` through and whose encoder holds only its top
layers (the same module objects, so what they learn is in the full model afterwards);
the saved model is a normal full model. ``BucketSampler`` orders the rows in
length-bucketed batches (sorted by length within buckets, buckets shuffled).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiflywheel.errors import ModelError
from aiflywheel.files import write_json_atomic
from aiflywheel.tasks.text_classification.models.encoding import (
    length_sorted_batches,
    mean_pool,
    torch_module,
)

CACHE_DIR = "frozen_cache"
BUCKET_BATCHES = 50  # batches per bucket: sorted by length within, buckets shuffled


def encoder_layers(model):
    """The base model and its ``encoder.layer`` list (ModelError when the model has none)."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ModelError("train.freeze_layers: this model has no encoder.layer list to freeze")
    return base, layers


def cache_key(source: str, layer: int, max_length: int | None, prefix: str, texts) -> str:
    """Same encoder, layer, length and texts -> same cache file."""
    digest = hashlib.sha256()
    digest.update(json.dumps([source, layer, max_length, prefix]).encode("utf-8"))
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


@dataclass
class LayerCache:
    """Per-text hidden states after the frozen layers, unpadded, in one fp16 memmap."""

    states: np.ndarray  # (total tokens, hidden) fp16, memory-mapped
    offsets: np.ndarray  # (n + 1,) start of each text's rows

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, index: int) -> np.ndarray:
        return self.states[self.offsets[index] : self.offsets[index + 1]]


def _paths(directory: Path, key: str) -> tuple[Path, Path]:
    return directory / f"{key}.f16", directory / f"{key}.json"


def open_cache(directory: Path, key: str) -> LayerCache | None:
    """The cache written under ``key``, or None when there is none (or it is incomplete)."""
    data, meta = _paths(Path(directory), key)
    if not (data.is_file() and meta.is_file()):
        return None
    info = json.loads(meta.read_text(encoding="utf-8"))
    offsets = np.asarray(info["offsets"], dtype=np.int64)
    total, hidden = int(offsets[-1]), int(info["hidden"])
    if data.stat().st_size != total * hidden * 2:
        return None
    states = np.memmap(data, dtype=np.float16, mode="r", shape=(total, hidden))
    return LayerCache(states, offsets)


def encode_frozen(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    layer: int,
    prefix: str,
    max_length: int | None,
    directory: Path | None,
    key: str | None = None,
    batch_size: int = 32,
    pooled: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[LayerCache | None, np.ndarray | None]:
    """One eval-mode pass over ``texts``: the hidden states after ``layer`` layers (written
    to ``directory/<key>.f16`` when ``directory`` is given) and, with ``pooled``, the
    L2-normalized mean-pooled top-layer embeddings (as ``TextEncoder.encode`` gives)."""
    torch = torch_module()
    base, layers = encoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ModelError(f"cannot cache layer {layer}: the model has {len(layers)} layers")
    n = len(texts)
    encoded = tokenizer([prefix + t for t in texts], truncation=True, max_length=max_length)[
        "input_ids"
    ]
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden = int(base.config.hidden_size)
    states = tmp = None
    if directory is not None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data, meta = _paths(directory, key)
        tmp = data.with_name(data.name + ".partial")
        states = np.memmap(tmp, dtype=np.float16, mode="w+", shape=(int(offsets[-1]), hidden))
    embeddings = np.zeros((n, hidden), dtype=np.float32) if pooled else None
    was_training = model.training
    model.eval()
    done = 0
    with torch.inference_mode():
        for batch in length_sorted_batches(texts, batch_size):
            inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            out = base(**inputs, output_hidden_states=pooled or states is not None)
            if states is not None:
                frozen = out.hidden_states[layer].float().numpy()
                for row, i in enumerate(batch):
                    states[offsets[i] : offsets[i + 1]] = frozen[row, : lengths[i]]
            if pooled:
                pooled_rows = torch.nn.functional.normalize(
                    mean_pool(out.last_hidden_state, inputs["attention_mask"]), dim=-1
                )
                embeddings[batch] = pooled_rows.float().numpy()
            done += len(batch)
            if progress is not None:
                progress(done)
    model.train(was_training)
    cache = None
    if states is not None:
        states.flush()
        del states
        os.replace(tmp, data)
        write_json_atomic(meta, {"hidden": hidden, "offsets": offsets.tolist(), "layer": layer})
        cache = open_cache(directory, key)
    return cache, embeddings


class CachedRows:
    """Training rows for the Trainer from a ``LayerCache``: the cached hidden states (as
    ``inputs_embeds``), an all-ones attention mask and the label."""

    def __init__(self, cache: LayerCache, labels: np.ndarray) -> None:
        if len(cache) != len(labels):
            raise ModelError(f"the layer cache holds {len(cache)} rows, not {len(labels)}")
        self.cache = cache
        self.labels = labels
        self.extra: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs_embeds": self.cache.rows(index), "labels": int(self.labels[index])}


def pad_cached(rows: list[dict]) -> dict:
    """Collate cached rows: zero-pad the hidden states to the batch's longest, mask the pad."""
    torch = torch_module()
    longest = max(len(r["inputs_embeds"]) for r in rows)
    hidden = rows[0]["inputs_embeds"].shape[1]
    embeds = np.zeros((len(rows), longest, hidden), dtype=np.float32)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        size = len(r["inputs_embeds"])
        embeds[i, :size] = r["inputs_embeds"]
        mask[i, :size] = 1
    return {
        "inputs_embeds": torch.from_numpy(embeds),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
    }


def bucketed_order(
    lengths: Sequence[int], batch_size: int, seed: int, bucket_batches: int = BUCKET_BATCHES
) -> list[int]:
    """Every index once, in batches of similar length: a seeded permutation cut into
    buckets of ``bucket_batches`` batches, each bucket sorted by length and cut into
    batches, and the batches shuffled (so no epoch runs shortest-first)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    size = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), size):
        bucket = sorted(order[start : start + size].tolist(), key=lambda i: lengths[i])
        batches.extend(bucket[j : j + batch_size] for j in range(0, len(bucket), batch_size))
    rng.shuffle(batches)
    return [i for batch in batches for i in batch]


class BucketSampler:
    """A Trainer sampler yielding ``bucketed_order``, reshuffled per epoch (``set_epoch``)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(bucketed_order(self.lengths, self.batch_size, self.seed + self.epoch))


def _pass_through():
    """A module standing in for the embeddings: cached hidden states come as ``inputs_embeds``."""
    torch = torch_module()

    class PassThrough(torch.nn.Module):
        def forward(self, input_ids=None, inputs_embeds=None, **_):
            if inputs_embeds is None:
                raise ModelError("the top-layer view of a model takes cached hidden states only")
            return inputs_embeds

    return PassThrough()


@contextmanager
def top_layers_view(model, frozen: int):
    """Within the block, ``model`` runs only its layers above ``frozen`` on hidden states
    passed as ``inputs_embeds``; the full model is restored on exit."""
    torch = torch_module()
    base, layers = encoder_layers(model)
    if not 0 < frozen < len(layers):
        raise ModelError(f"cannot train above layer {frozen} of {len(layers)}")
    embeddings, full = base.embeddings, layers
    base.embeddings = _pass_through()
    base.encoder.layer = torch.nn.ModuleList(list(full)[frozen:])
    try:
        yield model
    finally:
        base.embeddings = embeddings
        base.encoder.layer = torch.nn.ModuleList([*list(full)[:frozen], *list(base.encoder.layer)])


__all__ = [
    "BucketSampler",
    "CachedRows",
    "LayerCache",
    "bucketed_order",
    "cache_key",
    "encode_frozen",
    "open_cache",
    "pad_cached",
    "top_layers_view",
]
