"""Tiny encoders built from config for fast tests (2 layers, hidden 32, vocab from the data)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(directory: Path, texts: Sequence[str], *, seed: int = 0) -> Path:
    """A randomly initialized BERT whose WordPiece vocabulary is the texts' words and characters."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words: set[str] = set()
    for text in texts:
        for token in re.findall(r"[\u4e00-\u9fff]|[A-Za-z]+|\d+|[^\sA-Za-z\d]", text.lower()):
            words.add(token)
    chars = {ch for word in words for ch in word}
    tokens = SPECIAL + sorted(words) + sorted(f"##{ch}" for ch in chars if ch.isalnum())
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(directory), safe_serialization=True)
    return directory


def sentiment_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """Synthetic zh/en sentiment rows a tiny model can learn in seconds."""
    import random

    rng = random.Random(seed)
    good = ["很好", "满意", "喜欢", "great", "love", "excellent", "推荐", "fast"]
    bad = ["很差", "失望", "退货", "terrible", "hate", "broken", "垃圾", "slow"]
    filler = ["这个", "产品", "the", "product", "is", "物流", "服务", "really", "酒店", "book"]
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(filler, 3) + [rng.choice(good if label == "positive" else bad)]
        rng.shuffle(words)
        rows.append((" ".join(words) + f" {i}", label))
    return rows


def news_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """Synthetic zh/en 3-class news rows (sports / finance / tech) for multi-class tests."""
    import random

    rng = random.Random(seed)
    topics = {
        "sports": ["比赛", "球队", "冠军", "football", "match", "goal", "进球", "coach"],
        "finance": ["股票", "银行", "利率", "market", "shares", "profit", "投资", "bond"],
        "tech": ["手机", "芯片", "软件", "phone", "chip", "software", "算法", "robot"],
    }
    filler = ["今天", "新闻", "the", "report", "says", "记者", "消息", "latest", "本周", "news"]
    names = sorted(topics)
    rows = []
    for i in range(n):
        label = names[i % 3]
        words = rng.sample(filler, 3) + rng.sample(topics[label], 2)
        rng.shuffle(words)
        rows.append((" ".join(words) + f" {i}", label))
    return rows
