"""The seeds' LSTM encoder-decoder with attention, trained from scratch in torch.

Encoder: embeddings -> a bidirectional LSTM (half the hidden size each way). Decoder: an
LSTM fed its previous output token and its previous attentional state ("input feeding"),
Luong's *general* attention over the encoder states, ``tanh(W [context; state])`` as the
attentional state and a softmax over the target vocabulary. Decoding is greedy or beam
search (length-normalised log-probabilities).

``Seq2SeqTranslator``: ``fit(pairs) -> self``, ``translate(texts)``, ``save(dir)``,
``Seq2SeqTranslator.load(dir)`` (``model.safetensors`` + ``seq2seq.json``; no pickle).
Training checkpoints every epoch into ``checkpoint_dir``; Ctrl-C saves and raises
``TrainingInterrupted``, and calling ``fit`` again with the same folder resumes.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiflywheel.errors import ModelError, NotFittedError, TrainingInterrupted
from aiflywheel.files import write_json_atomic
from aiflywheel.tasks.text_to_text.tokens import BOS, EOS, PAD, UNK, Vocabulary, join, split

WEIGHTS = "model.safetensors"
MANIFEST = "seq2seq.json"
KIND = "lstm-attention-seq2seq"
PROGRESS_EVERY_S = 60.0


@dataclass(frozen=True)
class Translation:
    """One decoded output, its length-normalised log-probability, and beam alternatives."""

    text: str
    score: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)


def _network(src_vocab: int, tgt_vocab: int, embedding: int, hidden: int, layers: int, dropout):
    import torch
    from torch import nn

    class Seq2Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = layers
            self.hidden = hidden
            self.src_embed = nn.Embedding(src_vocab, embedding, padding_idx=0)
            self.tgt_embed = nn.Embedding(tgt_vocab, embedding, padding_idx=0)
            between = dropout if layers > 1 else 0.0
            self.encoder = nn.LSTM(
                embedding,
                hidden // 2,
                layers,
                batch_first=True,
                bidirectional=True,
                dropout=between,
            )
            self.decoder = nn.LSTM(
                embedding + hidden, hidden, layers, batch_first=True, dropout=between
            )
            self.attend = nn.Linear(hidden, hidden, bias=False)  # Luong "general"
            self.combine = nn.Linear(2 * hidden, hidden)
            self.drop = nn.Dropout(dropout)
            self.out = nn.Linear(hidden, tgt_vocab)

        def encode(self, src):
            lengths = (src != 0).sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(
                self.drop(self.src_embed(src)), lengths, batch_first=True, enforce_sorted=False
            )
            out, (h, c) = self.encoder(packed)
            memory, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=src.shape[1]
            )

            def merge(state):  # (layers*2, B, H/2) -> (layers, B, H)
                state = state.view(self.layers, 2, state.shape[1], -1)
                return torch.cat([state[:, 0], state[:, 1]], dim=-1).contiguous()

            return memory, src != 0, (merge(h), merge(c))

        def step(self, token, feed, state, memory, mask):
            """One decoder step: (log-probs over the vocabulary, attentional state, state)."""
            x = torch.cat([self.drop(self.tgt_embed(token)), feed], dim=-1).unsqueeze(1)
            out, state = self.decoder(x, state)
            query = out.squeeze(1)
            scores = torch.bmm(memory, self.attend(query).unsqueeze(2)).squeeze(2)
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=1)
            context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
            attentional = torch.tanh(self.combine(torch.cat([context, query], dim=-1)))
            logits = self.out(self.drop(attentional))
            return torch.log_softmax(logits, dim=-1), attentional, state

        def forward(self, src, tgt_in):
            memory, mask, state = self.encode(src)
            feed = memory.new_zeros(src.shape[0], self.hidden)
            steps = []
            for t in range(tgt_in.shape[1]):
                logp, feed, state = self.step(tgt_in[:, t], feed, state, memory, mask)
                steps.append(logp)
            return torch.stack(steps, dim=1)

    return Seq2Seq()


class Seq2SeqTranslator:
    """Source text -> target text (see module doc). Nothing happens in ``__init__``."""

    def __init__(
        self,
        *,
        source_mode: str = "char",
        target_mode: str = "word",
        embedding: int = 128,
        hidden: int = 256,
        layers: int = 1,
        dropout: float = 0.1,
        max_vocab: int = 20_000,
    ) -> None:
        if hidden % 2:
            raise ModelError(f"hidden must be even (two encoder directions), got {hidden}")
        self.source_mode = source_mode
        self.target_mode = target_mode
        self.embedding = embedding
        self.hidden = hidden
        self.layers = layers
        self.dropout = dropout
        self.max_vocab = max_vocab
        self.source_vocab: Vocabulary | None = None
        self.target_vocab: Vocabulary | None = None
        self.net: Any = None
        self.history: list[dict[str, Any]] = []

    # -- data -----------------------------------------------------------------
    def _encode_source(self, texts: Sequence[str], max_len: int = 512) -> Any:
        import torch

        assert self.source_vocab is not None
        rows = [
            self.source_vocab.encode(split(t, self.source_mode))[:max_len] or [1] for t in texts
        ]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)

    def _encode_target(self, texts: Sequence[str], max_len: int = 256) -> tuple[Any, Any]:
        import torch

        assert self.target_vocab is not None
        v = self.target_vocab
        rows = [v.encode(split(t, self.target_mode))[: max_len - 1] for t in texts]
        width = max(len(r) for r in rows) + 1
        tin = [[v.index[BOS], *r] + [0] * (width - len(r) - 1) for r in rows]
        tout = [[*r, v.index[EOS]] + [0] * (width - len(r) - 1) for r in rows]
        return torch.tensor(tin, dtype=torch.long), torch.tensor(tout, dtype=torch.long)

    def _build(self) -> None:
        assert self.source_vocab is not None and self.target_vocab is not None
        self.net = _network(
            len(self.source_vocab),
            len(self.target_vocab),
            self.embedding,
            self.hidden,
            self.layers,
            self.dropout,
        )

    # -- training ---------------------------------------------------------------
    def _loss(self, sources: Sequence[str], targets: Sequence[str]) -> Any:
        import torch

        src = self._encode_source(sources)
        tin, tout = self._encode_target(targets)
        logp = self.net(src, tin)
        return torch.nn.functional.nll_loss(
            logp.reshape(-1, logp.shape[-1]), tout.reshape(-1), ignore_index=0
        )

    def validation_loss(self, sources: Sequence[str], targets: Sequence[str], batch: int = 256):
        import torch

        self.net.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(sources), batch):
                n = len(sources[i : i + batch])
                total += float(self._loss(sources[i : i + batch], targets[i : i + batch])) * n
                count += n
        return total / max(1, count)

    def fit(
        self,
        sources: Sequence[str],
        targets: Sequence[str],
        *,
        val_sources: Sequence[str] = (),
        val_targets: Sequence[str] = (),
        epochs: float = 20,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
        time_budget_s: float | None = None,
        patience: int = 3,
        seed: int = 0,
        checkpoint_dir: Path | None = None,
        report: Callable[[str], None] = lambda _: None,
    ) -> Seq2SeqTranslator:
        """Train until ``epochs``, the time budget, or ``patience`` epochs without a better
        validation loss; the weights of the best validation epoch are kept."""
        import torch

        if not sources or len(sources) != len(targets):
            raise ModelError(
                f"fit needs as many targets as sources (at least one), got {len(sources)} "
                f"sources and {len(targets)} targets"
            )
        torch.manual_seed(seed)
        rng = random.Random(seed)
        self.source_vocab = Vocabulary.build(
            (split(s, self.source_mode) for s in sources), self.max_vocab
        )
        self.target_vocab = Vocabulary.build(
            (split(t, self.target_mode) for t in targets), self.max_vocab
        )
        self._build()
        optimizer = torch.optim.Adam(self.net.parameters(), lr=learning_rate)
        state = {"epoch": 0, "best": math.inf, "stale": 0, "elapsed": 0.0, "history": []}
        best_weights: dict[str, Any] | None = None
        if checkpoint_dir is not None and (checkpoint_dir / "state.json").is_file():
            state, best_weights = self._resume(checkpoint_dir, optimizer)
            rng.setstate(_rng_state(state.pop("rng")))
            report(f"resuming from epoch {state['epoch']} ({state['elapsed']:.0f} s trained)")
        started = time.perf_counter() - state["elapsed"]
        whole = math.ceil(epochs)
        try:
            while state["epoch"] < whole:
                self.net.train()
                order = list(range(len(sources)))  # fresh each epoch: a resume draws the same
                rng.shuffle(order)
                share = min(1.0, epochs - state["epoch"])
                chosen = order[: max(1, int(len(order) * share))]
                # Batches of similar source length: less padding, faster steps.
                chosen.sort(key=lambda i: len(sources[i]))
                batches = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
                rng.shuffle(batches)
                losses = []
                out_of_time = False
                shown = time.perf_counter()
                for number, batch in enumerate(batches, start=1):
                    optimizer.zero_grad()
                    loss = self._loss([sources[i] for i in batch], [targets[i] for i in batch])
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                    optimizer.step()
                    losses.append(float(loss.detach()))
                    if time.perf_counter() - shown > PROGRESS_EVERY_S:  # long epochs show progress
                        shown = time.perf_counter()
                        report(
                            f"  step {number}/{len(batches)} of epoch {state['epoch'] + 1}, "
                            f"loss {sum(losses[-50:]) / len(losses[-50:]):.3f} "
                            f"({shown - started:.0f} s)"
                        )
                    if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                        out_of_time = True
                        break
                state["epoch"] += 1
                val = (
                    self.validation_loss(val_sources, val_targets)
                    if val_sources
                    else sum(losses) / len(losses)
                )
                state["elapsed"] = time.perf_counter() - started
                entry = {
                    "epoch": state["epoch"],
                    "train_loss": round(sum(losses) / len(losses), 4),
                    "val_loss": round(val, 4),
                    "seconds": round(state["elapsed"], 1),
                    "steps": len(losses),
                }
                state["history"].append(entry)
                report(
                    f"epoch {entry['epoch']}: train loss {entry['train_loss']:.3f}, "
                    f"val loss {entry['val_loss']:.3f} ({entry['seconds']:.0f} s)"
                )
                if val < state["best"] - 1e-4:
                    state["best"], state["stale"] = val, 0
                    best_weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                else:
                    state["stale"] += 1
                if checkpoint_dir is not None:
                    self._checkpoint(checkpoint_dir, optimizer, state, best_weights, rng)
                if out_of_time:
                    report(f"time budget of {time_budget_s:g} s reached")
                    break
                if state["stale"] >= patience:
                    report(f"no better validation loss for {patience} epochs: stopped")
                    break
        except KeyboardInterrupt:
            if checkpoint_dir is None:
                raise
            raise TrainingInterrupted(
                f"training stopped after epoch {state['epoch']}; the checkpoint in "
                f"{checkpoint_dir} resumes it: run the same command again"
            ) from None
        if best_weights is not None:
            self.net.load_state_dict(best_weights)
        self.net.eval()
        self.history = state["history"]
        return self

    def _checkpoint(self, folder: Path, optimizer, state, best_weights, rng) -> None:
        import torch
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.contiguous() for k, v in self.net.state_dict().items()}
        if best_weights is not None:
            tensors.update({f"best.{k}": v.contiguous() for k, v in best_weights.items()})
        opt = optimizer.state_dict()
        for pid, entry in opt["state"].items():
            for key, value in entry.items():
                tensors[f"opt.{pid}.{key}"] = value.reshape(-1) if value.dim() == 0 else value
        tensors["rng.torch"] = torch.get_rng_state()  # dropout masks continue as they would
        tmp = folder / "checkpoint.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(folder / "checkpoint.safetensors")
        write_json_atomic(
            folder / "state.json",
            {
                **{k: v for k, v in state.items()},
                "rng": _rng_json(rng.getstate()),
                "param_groups": opt["param_groups"],
                "scalar_keys": sorted(
                    f"{pid}.{key}"
                    for pid, entry in opt["state"].items()
                    for key, value in entry.items()
                    if value.dim() == 0
                ),
            },
        )

    def _resume(self, folder: Path, optimizer) -> tuple[dict[str, Any], dict[str, Any] | None]:
        import torch
        from safetensors.torch import load_file

        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "checkpoint.safetensors"))
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        scalars = set(state.pop("scalar_keys"))
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, pid, name = key.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = (
                    value.reshape(()) if f"{pid}.{name}" in scalars else value
                )
        optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
        return state, best

    # -- decoding ---------------------------------------------------------------
    def _check(self) -> None:
        if self.net is None:
            raise NotFittedError("Seq2SeqTranslator: call fit (or load) before translate")

    def translate(
        self,
        texts: Sequence[str],
        *,
        beam_size: int = 4,
        alternatives: int = 0,
        max_tokens: int = 64,
    ) -> list[Translation]:
        """One ``Translation`` per text: greedy (batched) when ``beam_size`` is 1, else beam."""
        import torch

        self._check()
        self.net.eval()
        with torch.no_grad():
            if beam_size <= 1:
                out = []
                for i in range(0, len(texts), 128):
                    out.extend(self._greedy(texts[i : i + 128], max_tokens))
                return out
            return [self._beam(t, beam_size, alternatives, max_tokens) for t in texts]

    def _never_emitted(self) -> list[int]:
        """Padding, unknown and start tokens: decoding never picks them (an ``<unk>`` would
        print as nothing, so the next most likely real token is the better output)."""
        assert self.target_vocab is not None
        return [self.target_vocab.index[t] for t in (PAD, UNK, BOS)]

    def _greedy(self, texts: Sequence[str], max_tokens: int) -> list[Translation]:
        import torch

        assert self.target_vocab is not None
        v = self.target_vocab
        memory, mask, state = self.net.encode(self._encode_source(texts))
        n = len(texts)
        feed = memory.new_zeros(n, self.hidden)
        token = torch.full((n,), v.index[BOS], dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool)
        ids: list[list[int]] = [[] for _ in range(n)]
        total = torch.zeros(n)
        for position in range(max_tokens):
            logp, feed, state = self.net.step(token, feed, state, memory, mask)
            logp[:, self._never_emitted()] = float("-inf")
            if position == 0:  # no training target is empty: an output has one token at least
                logp[:, v.index[EOS]] = float("-inf")
            best, token = logp.max(dim=-1)
            for i in range(n):
                if not done[i]:
                    ids[i].append(int(token[i]))
                    total[i] += best[i]
            done |= token == v.index[EOS]
            if bool(done.all()):
                break
        return [
            Translation(join(v.decode(r), self.target_mode), float(total[i]) / max(1, len(r)))
            for i, r in enumerate(ids)
        ]

    def _beam(self, text: str, size: int, alternatives: int, max_tokens: int) -> Translation:
        import torch

        assert self.target_vocab is not None
        v = self.target_vocab
        eos = v.index[EOS]
        memory, mask, state = self.net.encode(self._encode_source([text]))
        beams = [(0.0, [v.index[BOS]], memory.new_zeros(1, self.hidden), state)]
        finished: list[tuple[float, list[int]]] = []
        for position in range(max_tokens):
            if not beams:
                break
            k = len(beams)
            token = torch.tensor([b[1][-1] for b in beams], dtype=torch.long)
            feed = torch.cat([b[2] for b in beams])
            h = torch.cat([b[3][0] for b in beams], dim=1)
            c = torch.cat([b[3][1] for b in beams], dim=1)
            logp, feed, (h, c) = self.net.step(
                token, feed, (h, c), memory.expand(k, -1, -1), mask.expand(k, -1)
            )
            logp[:, self._never_emitted()] = float("-inf")
            if position == 0:  # no training target is empty: an output has one token at least
                logp[:, eos] = float("-inf")
            scores = torch.tensor([b[0] for b in beams]).unsqueeze(1) + logp
            top, where = scores.view(-1).topk(min(size * 2, scores.numel()))
            candidates = []
            for score, flat in zip(top.tolist(), where.tolist(), strict=True):
                row, tok = divmod(flat, logp.shape[1])
                seq = beams[row][1] + [tok]
                if tok == eos:
                    finished.append((score / (len(seq) - 1), seq[1:]))
                else:
                    state_row = (h[:, row : row + 1], c[:, row : row + 1])
                    candidates.append((score, seq, feed[row : row + 1], state_row))
                if len(candidates) == size:
                    break
            beams = candidates
            if (
                len(finished) >= size
                and finished
                and max(f[0] for f in finished)
                > max((b[0] / (len(b[1]) - 1) for b in beams), default=-math.inf)
            ):
                break
        finished.extend((b[0] / max(1, len(b[1]) - 1), b[1][1:]) for b in beams)
        finished.sort(key=lambda f: -f[0])
        outputs: list[tuple[str, float]] = []
        for score, seq in finished:
            decoded = join(v.decode(seq), self.target_mode)
            if decoded not in (o[0] for o in outputs):
                outputs.append((decoded, round(score, 4)))
        best_text, best_score = outputs[0]
        return Translation(best_text, best_score, outputs[1 : 1 + alternatives])

    # -- persistence ------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        assert self.source_vocab is not None and self.target_vocab is not None
        return {
            "kind": KIND,
            "source_mode": self.source_mode,
            "target_mode": self.target_mode,
            "embedding": self.embedding,
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
            "max_vocab": self.max_vocab,
            "source_vocab": self.source_vocab.tokens,
            "target_vocab": self.target_vocab.tokens,
            "history": self.history,
        }

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        self._check()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{WEIGHTS}.tmp"
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp))
        tmp.replace(folder / WEIGHTS)
        write_json_atomic(folder / MANIFEST, self.manifest())
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Seq2SeqTranslator:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise ModelError(f"{folder} holds no seq2seq model ({MANIFEST} is missing)")
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if m.get("kind") != KIND:
            raise ModelError(f"{folder}: model kind {m.get('kind')!r} is not {KIND!r}")
        model = cls(
            source_mode=m["source_mode"],
            target_mode=m["target_mode"],
            embedding=m["embedding"],
            hidden=m["hidden"],
            layers=m["layers"],
            dropout=m["dropout"],
            max_vocab=m["max_vocab"],
        )
        model.source_vocab = Vocabulary(m["source_vocab"])
        model.target_vocab = Vocabulary(m["target_vocab"])
        model.history = m.get("history", [])
        model._build()
        model.net.load_state_dict(load_file(str(folder / WEIGHTS)))
        model.net.eval()
        return model


def _rng_json(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def _rng_state(data: list) -> tuple:
    return (data[0], tuple(data[1]), data[2])
