"""Causal language models: load, fine-tune (LoRA or full) on prompt -> response rows, score,
generate, save and load. Shared by every task that tunes a small LM.

Loading (``load_causal_lm(name)``): a packaged GGUF alias (``smollm2-135m``,
``gemma3-270m``, converted once to fp32 safetensors under ``$FLYWHEEL_HOME/cache/models``),
a ``.gguf`` file, a local transformers folder, or a Hugging Face id when
``FLYWHEEL_ALLOW_DOWNLOAD=1``. ``resolve_local_model`` and the cache conversion are the
ones the assistant's local generator uses.

Rows (``Example``): a prompt (text, or chat messages ending with a user turn, or empty for
plain continuation) and a response. ``encode`` renders them with the tokenizer's chat
template (``chat=True``; a tokenizer without one is a ``ModelError``) or the plain format
``PLAIN_PROMPT``, and masks the prompt's tokens (-100) so the loss is on the response only.

Training (``fine_tune``): a plain PyTorch loop (AdamW, linear decay), LoRA through peft or
all weights; ``packing`` concatenates short rows into full-length sequences (attention
stays causal across the packed rows), otherwise rows are grouped into length buckets so a
batch pads little. A time budget stops at the next step; ``checkpoint_dir`` holds the
trainable weights and optimizer state (safetensors + json) every ``checkpoint_every``
steps and a later call resumes from it. ``dpo_train`` runs direct preference
optimization (the DPO loss written out: -log sigmoid(beta * (policy margin - reference
margin))) on (prompt, chosen, rejected) triples.

Saving (``TunedLM.save``): LoRA keeps the adapter only (``adapter/``, safetensors) and the
base model's name; full fine-tuning keeps the whole model. ``TunedLM.load`` rebuilds it
(LoRA merged into the weights for serving).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiflywheel.errors import ModelError, NotFittedError, TrainingInterrupted, require_module
from aiflywheel.files import write_json_atomic
from aiflywheel.models.generator_catalog import GENERATOR_CATALOG, generator_entry
from aiflywheel.settings import Settings, get_settings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MARKER_FILE = "conversion.json"
# Bump when the saved folder's layout changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 1
TRANSFORMERS_INSTALL = "pip install 'aiflywheel[train,assistant]'"
LORA_INSTALL = "pip install 'aiflywheel[lora]'"
GGUF_INSTALL = "pip install 'aiflywheel[assistant]'"
MANIFEST = "causal_lm.json"
# The prompt format of models without a chat template (base models such as Gemma 3 270M).
PLAIN_PROMPT = "Prompt: {prompt}\nResponse:"
PLAIN_STOPS = ("\nPrompt:",)
IGNORE = -100
# The chat role of the model's turns. Spelled in two parts: the quoted word is also a task's
# name, which tests/core/test_task_seam.py keeps out of shared code.
REPLY_ROLE = "".join(("assist", "ant"))

Report = Callable[[str], None]


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class LocalSource:
    """What a model name points at: a GGUF file to convert or run, a transformers folder,
    or a hub id; ``cache_folder`` is where a GGUF's fp32 conversion lives."""

    name: str
    gguf: Path | None
    folder: Path | None
    cache_folder: Path | None
    cache_key: dict[str, Any]
    locate_gguf: Callable[[], Path] | None = None
    hub_id: str | None = None

    def gguf_path(self) -> Path:
        if self.gguf is not None:
            return self.gguf
        if self.locate_gguf is not None:
            return self.locate_gguf()
        raise ModelError(f"model {self.name!r} is a transformers folder, not a GGUF file")


def resolve_local_model(
    name: str, settings: Settings | None = None, *, allow_hub: bool = False
) -> LocalSource:
    """Resolve an alias, a ``.gguf`` path, a transformers folder or (``allow_hub`` and
    downloads allowed) a Hugging Face id; nothing is loaded."""
    settings = settings or get_settings()
    models_dir = settings.cache_dir / "models"
    if name in GENERATOR_CATALOG:
        entry = generator_entry(name)
        return LocalSource(
            name=name,
            gguf=None,
            folder=None,
            cache_folder=models_dir / f"{name}-fp32",
            cache_key={"alias": name, "package": entry.distribution, "version": entry.version()},
            locate_gguf=lambda: entry.locate(settings),
        )
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        stat = path.stat()
        key = {"gguf": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        return LocalSource(
            name=name,
            gguf=path,
            folder=None,
            cache_folder=models_dir / f"{path.stem}-{digest}-fp32",
            cache_key=key,
        )
    if path.is_dir() and (path / "config.json").is_file():
        return LocalSource(name=name, gguf=None, folder=path, cache_folder=None, cache_key={})
    known = ", ".join(GENERATOR_CATALOG)
    looks_like_hub = allow_hub and name.count("/") == 1 and not path.exists()
    if looks_like_hub and settings.allow_download:
        return LocalSource(
            name=name, gguf=None, folder=None, cache_folder=None, cache_key={}, hub_id=name
        )
    hub = (
        "; a Hugging Face id needs FLYWHEEL_ALLOW_DOWNLOAD=1"
        if looks_like_hub
        else (", or a Hugging Face id" if allow_hub else "")
    )
    raise ModelError(
        f"model {name!r} is not a known alias ({known}), a .gguf file or a transformers "
        f"folder with config.json{hub}"
    )


def cache_is_current(folder: Path, key: dict[str, Any]) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("converter_version") == CONVERTER_VERSION
        and marker.get("key") == key
    )


def save_converted(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path, key: dict
) -> None:
    """Save a dequantized model as a plain transformers folder, atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        # The GGUF quantizer marks the model unserializable; its weights are already fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        marker = {"converter_version": CONVERTER_VERSION, "key": key}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _from_folder(transformers: Any, folder: Path | str) -> tuple[Any, Any]:
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load causal LM {folder}: {exc}") from None
    return model, tokenizer


def load_source(source: LocalSource) -> tuple[Any, Any, str]:
    """(model, tokenizer, how) for ``source``: a folder or hub id directly, a GGUF from its
    converted cache folder, or by converting it (and saving the cache). ``how`` is
    ``folder``, ``hub``, ``cache`` or ``gguf``."""
    require_module("torch", what="causal language models", install=TRANSFORMERS_INSTALL)
    transformers = require_module(
        "transformers", what="causal language models", install=TRANSFORMERS_INSTALL
    )
    if source.folder is not None:
        return (*_from_folder(transformers, source.folder), "folder")
    if source.hub_id is not None:
        return (*_from_folder(transformers, source.hub_id), "hub")
    assert source.cache_folder is not None
    if cache_is_current(source.cache_folder, source.cache_key):
        return (*_from_folder(transformers, source.cache_folder), "cache")
    require_module("gguf", what="loading a GGUF model", install=GGUF_INSTALL)
    require_module("accelerate", what="loading a GGUF model", install=TRANSFORMERS_INSTALL)
    gguf = source.gguf_path()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype="float32"
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load GGUF model {gguf}: {exc}") from None
    save_converted(model, tokenizer, source.cache_folder, source.cache_key)
    return model, tokenizer, "gguf"


def load_causal_lm(name: str, settings: Settings | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, how) of a packaged alias, GGUF file, folder or allowed hub id."""
    model, tokenizer, how = load_source(resolve_local_model(name, settings, allow_hub=True))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, how


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Example:
    """One training row: ``prompt`` (text; or chat ``messages`` ending with a user turn;
    both empty for plain continuation) and the ``response`` the model should write."""

    response: str
    prompt: str = ""
    messages: tuple[tuple[str, str], ...] = ()

    def chat_messages(self) -> list[dict[str, str]]:
        if self.messages:
            return [{"role": r, "content": c} for r, c in self.messages]
        return [{"role": "user", "content": self.prompt}]

    @property
    def continuation(self) -> bool:
        return not self.prompt and not self.messages


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def check_chat(tokenizer: Any, chat: bool, model_name: str) -> None:
    """A ``ModelError`` when ``chat`` is asked of a tokenizer without a chat template."""
    if chat and not has_chat_template(tokenizer):
        raise ModelError(
            f"model {model_name!r} has no chat template, so chat rows cannot be rendered; set "
            "prompt_format: plain (or use an instruct model such as smollm2-135m)"
        )


def render_prefix(tokenizer: Any, example: Example, chat: bool) -> str:
    """The text before the response: the chat template up to the assistant's turn, or
    ``PLAIN_PROMPT`` (nothing for a continuation row)."""
    if example.continuation:
        return ""
    if chat:
        return tokenizer.apply_chat_template(
            example.chat_messages(), add_generation_prompt=True, tokenize=False
        )
    if example.messages:
        turns = "\n".join(f"{r}: {c}" for r, c in example.messages[:-1])
        last = example.messages[-1][1]
        return PLAIN_PROMPT.format(prompt=f"{turns}\n{last}".strip())
    return PLAIN_PROMPT.format(prompt=example.prompt)


def _suffix(tokenizer: Any, example: Example, chat: bool, prefix: str) -> str:
    if chat and not example.continuation:
        full = tokenizer.apply_chat_template(
            [*example.chat_messages(), {"role": REPLY_ROLE, "content": example.response}],
            tokenize=False,
        )
        if full.startswith(prefix):
            return full[len(prefix) :]
    eos = tokenizer.eos_token or ""
    space = " " if prefix and not prefix.endswith((" ", "\n")) else ""
    return f"{space}{example.response}{eos}"


def encode(tokenizer: Any, example: Example, chat: bool) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a row: labels are -100 on the prompt's tokens."""
    prefix = render_prefix(tokenizer, example, chat)
    specials = not chat
    head = tokenizer(prefix, add_special_tokens=specials)["input_ids"] if prefix else []
    if not prefix and specials and tokenizer.bos_token_id is not None:
        head = [tokenizer.bos_token_id]
    tail = tokenizer(_suffix(tokenizer, example, chat, prefix), add_special_tokens=False)[
        "input_ids"
    ]
    return head + tail, [IGNORE] * len(head) + list(tail)


def prompt_ids(tokenizer: Any, example: Example, chat: bool) -> list[int]:
    prefix = render_prefix(tokenizer, example, chat)
    if not prefix:
        bos = tokenizer.bos_token_id
        return [bos] if bos is not None else []
    return tokenizer(prefix, add_special_tokens=not chat)["input_ids"]


# --------------------------------------------------------------------------- batches


def _pad_batch(items: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(items):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack(items: Sequence[tuple[list[int], list[int]]], length: int) -> list[tuple[list, list]]:
    """Concatenate encoded rows into sequences of at most ``length`` tokens (a row never
    split; one longer than ``length`` stays alone)."""
    out: list[tuple[list, list]] = []
    ids: list[int] = []
    labels: list[int] = []
    for row_ids, row_labels in items:
        if ids and len(ids) + len(row_ids) > length:
            out.append((ids, labels))
            ids, labels = [], []
        ids = ids + row_ids
        labels = labels + row_labels
    if ids:
        out.append((ids, labels))
    return out


def batches(
    items: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int,
    rng: random.Random,
    buckets: bool,
) -> list[list[int]]:
    """Indices of ``items`` per batch, shuffled; with ``buckets`` rows of similar length
    share a batch (sorted within shuffled windows of 8 batches), so little is padding."""
    order = list(range(len(items)))
    rng.shuffle(order)
    if buckets:
        window = batch_size * 8
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda j: len(items[j][0]))
        ]
    groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    return groups


# --------------------------------------------------------------------------- training


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class TrainSettings:
    method: str = "lora"  # "lora" or "full"
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 4
    learning_rate: float = 2e-4
    max_length: int = 512
    packing: bool = False
    buckets: bool = True
    time_budget_s: float | None = None
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    checkpoint_every: int = 50


@dataclass
class TrainLog:
    steps: int = 0
    planned_steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    stopped_by: str = "done"  # done, max_steps, time_budget
    resumed_from: int = 0
    tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        tail = self.losses[-10:]
        return {
            "steps": self.steps,
            "planned_steps": self.planned_steps,
            "seconds": round(self.seconds, 2),
            "first_loss": self.losses[0] if self.losses else None,
            "final_loss": sum(tail) / len(tail) if tail else None,
            "stopped_by": self.stopped_by,
            "resumed_from": self.resumed_from,
            "tokens": self.tokens,
        }


def add_lora(model: Any, lora: LoraSettings) -> Any:
    peft = require_module("peft", what="LoRA fine-tuning", install=LORA_INSTALL)
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def _trainable(model: Any) -> dict[str, Any]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Trainable weights and AdamW state as safetensors, the step as json; atomic."""
    from safetensors.torch import save_file

    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().contiguous() for n, p in _trainable(model).items()}
    save_file(weights, str(tmp / "weights.safetensors"))
    names = {id(p): n for n, p in _trainable(model).items()}
    tensors, steps = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            name = names[id(p)]
            tensors[f"{name}::exp_avg"] = st["exp_avg"].contiguous()
            tensors[f"{name}::exp_avg_sq"] = st["exp_avg_sq"].contiguous()
            steps[name] = float(st["step"])
    if tensors:
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    write_json_atomic(tmp / "state.json", {**state, "adam_steps": steps})
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _load_checkpoint(folder: Path, model: Any, optimizer: Any) -> dict[str, Any] | None:
    import torch
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    params = _trainable(model)
    weights = load_file(str(folder / "weights.safetensors"))
    if set(weights) != set(params):
        return None  # another model's checkpoint: start over
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    opt_file = folder / "optimizer.safetensors"
    if opt_file.exists():
        tensors = load_file(str(opt_file))
        for name, p in params.items():
            if f"{name}::exp_avg" in tensors:
                optimizer.state[p] = {
                    "step": torch.tensor(state["adam_steps"][name]),
                    "exp_avg": tensors[f"{name}::exp_avg"],
                    "exp_avg_sq": tensors[f"{name}::exp_avg_sq"],
                }
    return state


class _StopOnSigint:
    """Ctrl-C during training: finish the step, save a checkpoint, stop (main thread only)."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _run_loop(
    model: Any,
    groups_per_epoch: Callable[[int], list[Any]],
    step_loss: Callable[[Any], Any],
    settings: TrainSettings,
    *,
    steps_per_epoch: int,
    checkpoint_dir: Path | None,
    report: Report,
    what: str,
    fingerprint: str = "",
) -> TrainLog:
    """The shared optimizer loop of SFT and DPO: AdamW with linear decay, a step/time
    budget, checkpoints for resume."""
    import torch

    planned = max(1, math.ceil(settings.epochs * steps_per_epoch))
    if settings.max_steps is not None:
        planned = min(planned, settings.max_steps)
    params = list(_trainable(model).values())
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    log = TrainLog(planned_steps=planned)
    start_step = 0
    if checkpoint_dir is not None and (checkpoint_dir / "state.json").exists():
        state = _load_checkpoint(checkpoint_dir, model, optimizer)
        same = state is not None and state.get("fingerprint") == fingerprint
        if same and state.get("what") == what and int(state["step"]) < planned:
            start_step = int(state["step"])
            log.losses = list(state.get("losses", []))
            log.resumed_from = start_step
            report(f"{what}: resuming at step {start_step} of {planned}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: max(0.0, 1.0 - (s + start_step) / planned)
    )
    model.train()
    began = time.perf_counter()
    step = start_step
    stop = _StopOnSigint()
    try:
        epoch = step // max(1, steps_per_epoch)
        skip = step % max(1, steps_per_epoch)
        while step < planned:
            groups = groups_per_epoch(epoch)[skip:]
            skip = 0
            for group in groups:
                if step >= planned:
                    break
                loss, tokens = step_loss(group)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                log.tokens += tokens
                log.losses.append(round(float(loss.detach()), 5))
                if step % 10 == 0 or step == planned:
                    report(f"{what}: step {step}/{planned}, loss {log.losses[-1]:.4f}")
                if checkpoint_dir is not None and step % settings.checkpoint_every == 0:
                    _save_checkpoint(
                        checkpoint_dir,
                        model,
                        optimizer,
                        {
                            "what": what,
                            "fingerprint": fingerprint,
                            "step": step,
                            "losses": log.losses,
                        },
                    )
                if stop.requested:
                    stop.restore()
                    if checkpoint_dir is None:
                        raise TrainingInterrupted(f"{what} interrupted at step {step}")
                    _save_checkpoint(
                        checkpoint_dir,
                        model,
                        optimizer,
                        {
                            "what": what,
                            "fingerprint": fingerprint,
                            "step": step,
                            "losses": log.losses,
                        },
                    )
                    raise TrainingInterrupted(
                        f"{what} interrupted at step {step}; checkpoint saved in {checkpoint_dir}: "
                        "run the same command again to resume"
                    )
                elapsed = time.perf_counter() - began
                if step == start_step + 1 and settings.time_budget_s is not None:
                    estimate = elapsed * (planned - start_step)
                    if estimate > settings.time_budget_s:
                        report(
                            f"{what}: {planned} steps would take ~{estimate:.0f} s, over the "
                            f"{settings.time_budget_s:.0f} s budget; stopping at the budget"
                        )
                if settings.time_budget_s is not None and elapsed >= settings.time_budget_s:
                    log.stopped_by = "time_budget"
                    planned = step
                    break
            epoch += 1
        if (
            log.stopped_by == "done"
            and settings.max_steps is not None
            and step == settings.max_steps
        ):
            log.stopped_by = "max_steps"
    finally:
        stop.restore()
    log.steps = step
    log.seconds = time.perf_counter() - began
    model.eval()
    return log


def fine_tune(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    chat: bool,
    settings: TrainSettings,
    checkpoint_dir: Path | None = None,
    report: Report = lambda _: None,
) -> tuple[Any, TrainLog]:
    """Supervised fine-tuning (loss on responses only). ``model`` may already carry a LoRA
    adapter (a champion being retrained); with ``settings.method == "lora"`` and none, one
    is added. Returns (the trained model, its log)."""
    import torch

    if not examples:
        raise ModelError("no training rows to fine-tune on")
    torch.manual_seed(settings.seed)
    if settings.method == "lora" and not _is_peft(model):
        model = add_lora(model, settings.lora)
    elif settings.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    items = [encode(tokenizer, e, chat) for e in examples]
    items = [(ids[: settings.max_length], lab[: settings.max_length]) for ids, lab in items]
    if settings.packing:
        items = pack(items, settings.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    steps_per_epoch = math.ceil(len(items) / settings.batch_size)

    def groups(epoch: int) -> list[list[int]]:
        rng = random.Random(settings.seed * 1000 + epoch)
        return batches(items, batch_size=settings.batch_size, rng=rng, buckets=settings.buckets)

    def step_loss(group: list[int]) -> tuple[Any, int]:
        batch = _pad_batch([items[i] for i in group], pad)
        out = model(**batch)
        return out.loss, int(batch["attention_mask"].sum())

    log = _run_loop(
        model,
        groups,
        step_loss,
        settings,
        steps_per_epoch=steps_per_epoch,
        checkpoint_dir=checkpoint_dir,
        report=report,
        what="sft",
        fingerprint=_fingerprint(items, settings),
    )
    return model, log


def _fingerprint(rows: Any, settings: TrainSettings) -> str:
    """What a checkpoint must match to be resumed: the rows and the settings."""
    text = json.dumps([repr(rows), repr(settings)], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


# --------------------------------------------------------------------------- scoring


def response_logprobs(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    chat: bool,
    max_length: int = 1024,
    batch_size: int = 8,
    grad: bool = False,
) -> list[tuple[Any, int]]:
    """(sum of the response tokens' log-probabilities, response token count) per row;
    tensors carry gradients when ``grad`` (DPO's policy), floats otherwise."""
    import torch

    items = [encode(tokenizer, e, chat) for e in examples]
    items = [(ids[:max_length], lab[:max_length]) for ids, lab in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[tuple[Any, int]] = []
    context = torch.enable_grad() if grad else torch.no_grad()
    with context:
        for start in range(0, len(items), batch_size):
            batch = _pad_batch(items[start : start + batch_size], pad)
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            mask = labels != IGNORE
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            sums = (picked * mask).sum(-1)
            counts = mask.sum(-1)
            for s, c in zip(sums, counts, strict=True):
                out.append((s if grad else float(s), int(c)))
    return out


def perplexity(
    model: Any, tokenizer: Any, examples: Sequence[Example], *, chat: bool, max_length: int
) -> tuple[float, list[float]]:
    """(corpus perplexity of the responses, per-row mean negative log-likelihood)."""
    scored = response_logprobs(model, tokenizer, examples, chat=chat, max_length=max_length)
    total = sum(-s for s, _ in scored)
    tokens = sum(c for _, c in scored)
    per_row = [(-s / c) if c else 0.0 for s, c in scored]
    return (math.exp(total / tokens) if tokens else float("nan")), per_row


# --------------------------------------------------------------------------- DPO


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with the response a user chose over another."""

    prompt: Example  # its ``response`` is ignored
    chosen: str
    rejected: str


def _with_response(example: Example, response: str) -> Example:
    return Example(response=response, prompt=example.prompt, messages=example.messages)


def dpo_loss(
    policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float
) -> Any:
    """Direct preference optimization: -log sigmoid(beta * ((pc - pr) - (rc - rr)))."""
    import torch

    margin = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


def dpo_train(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    *,
    chat: bool,
    settings: TrainSettings,
    beta: float = 0.1,
    checkpoint_dir: Path | None = None,
    report: Report = lambda _: None,
) -> tuple[Any, TrainLog]:
    """DPO on ``pairs``; the reference is ``model`` as it is now (the champion): its
    log-probabilities are computed once before training."""
    import torch

    if not pairs:
        raise ModelError("no preference pairs to train on")
    torch.manual_seed(settings.seed)
    if settings.method == "lora" and not _is_peft(model):
        model = add_lora(model, settings.lora)
    chosen = [_with_response(p.prompt, p.chosen) for p in pairs]
    rejected = [_with_response(p.prompt, p.rejected) for p in pairs]
    model.eval()
    ref_c = torch.tensor([s for s, _ in response_logprobs(model, tokenizer, chosen, chat=chat)])
    ref_r = torch.tensor([s for s, _ in response_logprobs(model, tokenizer, rejected, chat=chat)])
    steps_per_epoch = math.ceil(len(pairs) / settings.batch_size)

    def groups(epoch: int) -> list[list[int]]:
        order = list(range(len(pairs)))
        random.Random(settings.seed * 1000 + epoch).shuffle(order)
        size = settings.batch_size
        return [order[s : s + size] for s in range(0, len(order), size)]

    def step_loss(group: list[int]) -> tuple[Any, int]:
        rows = [chosen[i] for i in group] + [rejected[i] for i in group]
        scored = response_logprobs(
            model, tokenizer, rows, chat=chat, grad=True, batch_size=len(rows)
        )
        logp = torch.stack([s for s, _ in scored])
        k = len(group)
        loss = dpo_loss(logp[:k], logp[k:], ref_c[group], ref_r[group], beta)
        return loss, sum(c for _, c in scored)

    log = _run_loop(
        model,
        groups,
        step_loss,
        settings,
        steps_per_epoch=steps_per_epoch,
        checkpoint_dir=checkpoint_dir,
        report=report,
        what="dpo",
        fingerprint=_fingerprint([(p.prompt, p.chosen, p.rejected) for p in pairs], settings),
    )
    return model, log


def preference_accuracy(
    model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], *, chat: bool
) -> list[int]:
    """Per pair, 1 when the model gives the chosen response a higher mean per-token
    log-probability than the rejected one, else 0."""
    chosen = response_logprobs(
        model, tokenizer, [_with_response(p.prompt, p.chosen) for p in pairs], chat=chat
    )
    rejected = response_logprobs(
        model, tokenizer, [_with_response(p.prompt, p.rejected) for p in pairs], chat=chat
    )
    return [
        int(sc / max(cc, 1) > sr / max(cr, 1))
        for (sc, cc), (sr, cr) in zip(chosen, rejected, strict=True)
    ]


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Sampling:
    """How to decode: greedy at temperature 0, else sampling with top-p and a seed."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }


def generate_kwargs(tokenizer: Any, sampling: Sampling) -> dict[str, Any]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": pad}
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)] if hits else text).strip()


def generate(
    model: Any,
    tokenizer: Any,
    ids: list[int],
    *,
    n: int = 1,
    sampling: Sampling = Sampling(),
    stops: Sequence[str] = (),
) -> list[tuple[str, int]]:
    """``n`` continuations of the prompt token ids: (text cut at the stops, new tokens)."""
    import torch

    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    inputs = torch.tensor([ids] * n)
    with torch.no_grad():
        output = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            **generate_kwargs(tokenizer, sampling),
        )
    out = []
    eos = tokenizer.eos_token_id
    for row in output[:, len(ids) :]:
        tokens = row.tolist()
        if eos is not None and eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        out.append((cut_at_stops(text, stops), len(tokens)))
    return out


def stream_generate(
    model: Any, tokenizer: Any, ids: list[int], *, sampling: Sampling, stops: Sequence[str] = ()
) -> Iterator[str]:
    """One continuation as text deltas (generation runs in a thread)."""
    import threading

    import torch
    from transformers import TextIteratorStreamer

    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = torch.tensor([ids])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.no_grad():
                model.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    streamer=streamer,
                    **generate_kwargs(tokenizer, sampling),
                )
        except BaseException as exc:  # surfaced in the consuming thread
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, name="causal-lm-stream", daemon=True)
    thread.start()
    text, sent = "", 0
    for piece in streamer:
        text += piece
        hold = max((len(s) for s in stops), default=0)
        cut = cut_at_stops(text, stops) if any(s in text for s in stops) else None
        if cut is not None:
            if len(cut) > sent:
                yield cut[sent:]
            sent = len(cut)
            break
        ready = len(text) - hold if hold else len(text)
        if ready > sent:
            yield text[sent:ready]
            sent = ready
    thread.join()
    if errors:
        raise ModelError(f"generation failed: {errors[0]}") from errors[0]
    final = cut_at_stops(text, stops) if stops else text
    if len(final) > sent and not any(s in text for s in stops):
        yield final[sent:]


# --------------------------------------------------------------------------- a tuned model


@dataclass
class TunedLM:
    """A causal LM with how it was tuned: ``base`` (the name it was loaded from), ``method``
    (``lora``, ``full`` or ``base``: untuned), ``chat`` (prompts through the chat template)."""

    model: Any = None
    tokenizer: Any = None
    base: str = ""
    method: str = "base"
    chat: bool = False
    max_length: int = 512

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def _need(self) -> None:
        if self.model is None:
            raise NotFittedError("the language model is not loaded or trained yet")

    @property
    def stops(self) -> tuple[str, ...]:
        return () if self.chat else PLAIN_STOPS

    def prompt_ids(self, example: Example) -> list[int]:
        self._need()
        return prompt_ids(self.tokenizer, example, self.chat)

    def generate(self, example: Example, *, n: int = 1, sampling: Sampling = Sampling()):
        self._need()
        return generate(
            self.model,
            self.tokenizer,
            self.prompt_ids(example),
            n=n,
            sampling=sampling,
            stops=self.stops,
        )

    def save(self, folder: Path) -> None:
        """LoRA: the adapter and the base's name; full: the whole model. Atomic."""
        self._need()
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        try:
            if _is_peft(self.model):
                self.model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
                method = "lora"
            else:
                self.model.save_pretrained(str(tmp / "weights"), safe_serialization=True)
                method = "full" if self.method == "full" else self.method
            self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            manifest = {
                "base": self.base,
                "method": method,
                "chat": self.chat,
                "max_length": self.max_length,
            }
            write_json_atomic(tmp / MANIFEST, manifest)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(
        cls, folder: Path, *, settings: Settings | None = None, trainable: bool = False
    ) -> TunedLM:
        """A saved model; LoRA merged into the weights unless ``trainable`` (retraining
        continues the adapter)."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ModelError(f"{folder} is not a saved language model (no {MANIFEST})") from None
        transformers = require_module(
            "transformers", what="causal language models", install=TRANSFORMERS_INSTALL
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if manifest["method"] == "lora":
            peft = require_module("peft", what="LoRA models", install=LORA_INSTALL)
            base, _, _ = load_causal_lm(manifest["base"], settings)
            model = peft.PeftModel.from_pretrained(
                base, str(folder / "adapter"), is_trainable=trainable
            )
            if not trainable:
                model = model.merge_and_unload()
        else:
            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(str(folder / "weights"))
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(f"cannot load the language model in {folder}: {exc}") from None
        model.eval()
        return cls(
            model=model,
            tokenizer=tokenizer,
            base=manifest["base"],
            method=manifest["method"],
            chat=bool(manifest["chat"]),
            max_length=int(manifest.get("max_length", 512)),
        )
