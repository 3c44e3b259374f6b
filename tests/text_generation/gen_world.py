"""A tiny customer-service world for text_generation tests: short zh/en reply pairs, a
tiny causal LM built from config over their words, and a recipe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tiny_lm import build_tiny_lm  # noqa: E402

TOPICS = [
    ("where is my order", "your order ships in two days"),
    ("how do i get a refund", "refunds take five days after we get the item"),
    ("can i change my address", "yes change it within one hour of ordering"),
    ("do you ship abroad", "we ship to ten countries"),
    ("is the lamp in stock", "the lamp is back in stock next week"),
    ("我 的 订单 在 哪里", "您 的 订单 两 天 内 发货"),
    ("怎么 退款", "收到 商品 后 五 天 内 退款"),
    ("可以 改 地址 吗", "下单 一 小时 内 可以 修改"),
]
# The loop test checks the wheel turns; the gate's strictness is checked on its own.
LOOSE_GATE = "min_preference_gain: -100, max_perplexity_increase: 10, max_chrf_drop: 100"
POLITE = ["please", "hi", "hello", "thanks", "请问", "你好"]


def rows() -> list[dict[str, str]]:
    """40 pairs: each topic asked five ways."""
    out = []
    for i, (prompt, response) in enumerate(TOPICS):
        for j, word in enumerate(POLITE[:5]):
            language = "zh" if i >= 5 else "en"
            out.append(
                {"prompt": f"{word} {prompt} {j}", "response": response, "language": language}
            )
    return out


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "replies.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows()), "utf-8")
    return path


def build_model(folder: Path, *, chat: bool = True) -> Path:
    texts = [f"{r['prompt']} {r['response']}" for r in rows()] + [str(i) for i in range(10)]
    return build_tiny_lm(folder, texts, chat=chat)


def recipe_text(
    source: str, model: str, *, feature: str = "replies", extra: str = "", gate: str = ""
) -> str:
    return (
        f"feature: {feature}\n"
        "task: text_generation\n"
        "seed: 1\n"
        "generation:\n"
        f"  source: {source}\n"
        f"  model: {model}\n"
        "  method: lora\n"
        "  lora: {r: 4, alpha: 8, dropout: 0.0}\n"
        "  max_length: 64\n"
        "  epochs: 8\n"
        "  batch_size: 8\n"
        "  learning_rate: 0.01\n"
        "  sampling: {n: 2, temperature: 0.8, top_p: 0.95, seed: 3, max_new_tokens: 12}\n"
        "  limits: {max_tokens: 32, max_n: 4, max_total_tokens: 64}\n"
        f"  gate: {{{gate or LOOSE_GATE}}}\n"
        f"{extra}"
        "split: {train: 0.6, val: 0.2, test: 0.2}\n"
        "train: {threads: 1}\n"
        "evaluate: {bootstrap_resamples: 200}\n"
        "gate: {feedback_holdout: 0.3, min_feedback: 1}\n"
    )
