"""Load time and tokens/s of the packaged local generators on help-center questions.

    python benchmarks/local_generator.py [--models smollm2-135m,gemma3-270m]
        [--max-new-tokens 48] [--home DIR] [--threads N]

For each model: the first load in a fresh cache folder (GGUF -> fp32 conversion with
the transformers backend), a second load from the cache, then one answer per question
(prompt tokens, completion tokens, seconds, completion tokens/s, time to the first
streamed text) and whether the grounding post-check supports the answer. ``--home``
keeps the converted folders (default: a throwaway FLYWHEEL_HOME, so the first load is a
real first load). Prints one line per step and a summary table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from aiflywheel.settings import Settings
from aiflywheel.tasks.assistant.grounding import check_support
from aiflywheel.tasks.assistant.local_generator import LocalGenerator, missing_local_models
from aiflywheel.tasks.assistant.types import Chunk

PASSAGES_EN = [
    Chunk(
        id="returns",
        kind="doc",
        text="Refunds are issued within 5 business days after we receive the returned item. "
        "The money goes back to the original payment method.",
        source="docs/returns.en.md",
        anchor="refund-timeline",
        title="Refund timeline",
        language="en",
    ),
    Chunk(
        id="address",
        kind="faq",
        text="Can I change my delivery address?",
        answer="Yes, within 1 hour of ordering in Orders > Edit. After that the parcel is packed.",
        source="faq.jsonl",
        anchor="change-address",
        language="en",
    ),
    Chunk(
        id="shipping",
        kind="doc",
        text="Orders ship within 24 hours on business days. Express delivery takes 1-2 days.",
        source="docs/shipping.en.md",
        anchor="shipping-times",
        title="Shipping times",
        language="en",
    ),
]
PASSAGES_ZH = [
    Chunk(
        id="tuikuan",
        kind="doc",
        text="我们在收到退回商品后 5 个工作日内退款，款项原路返回。",
        source="docs/returns.zh.md",
        anchor="tuikuan",
        title="退款时效",
        language="zh",
    ),
    Chunk(
        id="dizhi",
        kind="faq",
        text="可以修改收货地址吗？",
        answer="下单后 1 小时内可以在“我的订单 > 修改”中修改收货地址。",
        source="faq.jsonl",
        anchor="dizhi",
        language="zh",
    ),
]
QUESTIONS = [
    ("How long does a refund take?", PASSAGES_EN, "en"),
    ("Can I change the delivery address after ordering?", PASSAGES_EN, "en"),
    ("How fast is express delivery?", PASSAGES_EN, "en"),
    ("退款多久到账？", PASSAGES_ZH, "zh"),
]


def bench_model(alias: str, settings: Settings, max_new_tokens: int) -> dict:
    first = LocalGenerator(alias, settings=settings, max_new_tokens=max_new_tokens)
    first.warm()
    first_load = first.load_seconds or 0.0
    print(
        f"{alias}: first load {first.load_seconds:.1f} s ({first.loaded_from}, "
        f"backend {first.backend})"
    )
    generator = LocalGenerator(alias, settings=settings, max_new_tokens=max_new_tokens)
    generator.warm()
    print(f"{alias}: second load {generator.load_seconds:.1f} s ({generator.loaded_from})")
    del first
    rows = []
    for question, passages, language in QUESTIONS:
        result = generator.generate(question, passages, language=language)
        start = time.perf_counter()
        stream = generator.stream(question, passages, language=language)
        first_text = next(stream, "")
        ttft = time.perf_counter() - start
        streamed = first_text + "".join(stream)
        support = check_support(result.text, passages, result.cited)
        rate = result.completion_tokens / result.seconds if result.seconds else 0.0
        rows.append((result.prompt_tokens, result.completion_tokens, result.seconds, rate))
        print(
            f"  {question!r}: prompt {result.prompt_tokens} tok, completion "
            f"{result.completion_tokens} tok in {result.seconds:.1f} s = {rate:.1f} tok/s, "
            f"first streamed text after {ttft:.1f} s, stream==generate "
            f"{streamed == result.text}, grounded {support.supported} "
            f"(score {support.score:.2f}), cites {result.cited}\n    -> {result.text!r}"
        )
    completion = sum(r[1] for r in rows)
    seconds = sum(r[2] for r in rows)
    return {
        "model": alias,
        "backend": generator.backend,
        "first_load_s": first_load,
        "cached_load_s": generator.load_seconds or 0.0,
        "prompt_tokens_mean": sum(r[0] for r in rows) / len(rows),
        "tokens_per_s": completion / seconds if seconds else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    missing = missing_local_models()
    home = args.home or Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    settings = Settings(home=home)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, home {home}")
    summary = []
    for alias in [m.strip() for m in args.models.split(",") if m.strip()]:
        if alias in missing:
            print(f"{alias}: not installed; run `{missing[alias]}`")
            continue
        summary.append(bench_model(alias, settings, args.max_new_tokens))
    print(
        f"\n{'model':<14} {'backend':<13} {'1st load':>9} {'cached':>8} {'prompt':>7} {'tok/s':>7}"
    )
    for row in summary:
        print(
            f"{row['model']:<14} {row['backend']:<13} {row['first_load_s']:>8.1f}s "
            f"{row['cached_load_s']:>7.1f}s {row['prompt_tokens_mean']:>7.0f} "
            f"{row['tokens_per_s']:>7.1f}"
        )


if __name__ == "__main__":
    main()
