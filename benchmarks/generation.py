"""Tokens/s and first-token latency of a text generator on this machine's CPU.

    python benchmarks/generation.py MODEL [--prompts 5] [--max-tokens 48] [--threads 2]

MODEL is a saved model folder (a version's ``model/``: ``causal_lm.json`` + adapter or
weights; LoRA is merged into the weights, as served) or a base model name (a packaged
alias such as ``smollm2-135m``, a .gguf file, a transformers folder). Each prompt is
answered greedily twice through transformers: once streamed (first-token latency: from
the call to the first decoded text) and once whole (tokens/s: new tokens / seconds).
With ``llama-cpp-python`` installed and MODEL a packaged alias or .gguf file, the same
prompts also run through llama.cpp (an untuned model only: a tuned LoRA version would
first need exporting to GGUF, which this project does not do). Prints one line per
backend with the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

PROMPTS = [
    "How long does delivery take?",
    "Can I change my delivery address after ordering?",
    "How do I return an item I don't want?",
    "When will my refund arrive?",
    "Do you ship to Hong Kong?",
    "退货运费谁承担？",
    "积分可以抵扣多少钱？",
]


def load(model: str):
    from aiflywheel.models.causal_lm import TunedLM, has_chat_template, load_causal_lm

    path = Path(model)
    if (path / "causal_lm.json").is_file():
        return TunedLM.load(path)
    lm, tokenizer, _ = load_causal_lm(model)
    return TunedLM(lm.eval(), tokenizer, base=model, chat=has_chat_template(tokenizer))


def bench_transformers(lm, prompts: list[str], max_tokens: int) -> dict[str, float]:
    from aiflywheel.models.causal_lm import Example, Sampling, stream_generate

    sampling = Sampling(max_new_tokens=max_tokens)
    first, rates = [], []
    for prompt in prompts:
        example = Example(response="", prompt=prompt)
        started = time.perf_counter()
        pieces = stream_generate(
            lm.model, lm.tokenizer, lm.prompt_ids(example), sampling=sampling, stops=lm.stops
        )
        for _ in pieces:
            first.append(time.perf_counter() - started)
            break
        for _ in pieces:
            pass
        started = time.perf_counter()
        [(_, tokens)] = lm.generate(example, sampling=sampling)
        rates.append(tokens / (time.perf_counter() - started))
    return {"first_token_s": statistics.median(first), "tokens_per_s": statistics.median(rates)}


def bench_llama_cpp(model: str, prompts: list[str], max_tokens: int) -> dict[str, float] | None:
    from aiflywheel.tasks.assistant.local_generator import llama_cpp_available

    if not llama_cpp_available() or Path(model, "causal_lm.json").exists():
        return None
    import llama_cpp

    from aiflywheel.models.causal_lm import resolve_local_model

    llm = llama_cpp.Llama(model_path=str(resolve_local_model(model).gguf_path()), verbose=False)
    first, rates = [], []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        started = time.perf_counter()
        stream = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, stream=True)
        count = 0
        for chunk in stream:
            if chunk["choices"][0].get("delta", {}).get("content"):
                if count == 0:
                    first.append(time.perf_counter() - started)
                count += 1
        rates.append(count / (time.perf_counter() - started))
    return {"first_token_s": statistics.median(first), "tokens_per_s": statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    prompts = PROMPTS[: args.prompts]
    started = time.perf_counter()
    lm = load(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - started:.1f} s ({args.threads} threads)")
    bench_transformers(lm, prompts[:1], 4)  # warm-up
    figures = bench_transformers(lm, prompts, args.max_tokens)
    print(
        f"transformers: {figures['tokens_per_s']:.1f} tokens/s, first token "
        f"{1000 * figures['first_token_s']:.0f} ms (median of {len(prompts)} prompts, greedy, "
        f"at most {args.max_tokens} new tokens)"
    )
    cpp = bench_llama_cpp(args.model, prompts, args.max_tokens)
    if cpp is None:
        print("llama.cpp: not measured (llama-cpp-python not installed, or a tuned version)")
    else:
        print(
            f"llama.cpp: {cpp['tokens_per_s']:.1f} tokens/s, first token "
            f"{1000 * cpp['first_token_s']:.0f} ms"
        )


if __name__ == "__main__":
    main()
