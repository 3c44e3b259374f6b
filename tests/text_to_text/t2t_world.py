"""A tiny text_to_text world: strings of letters -> one English number word per letter.

``a`` -> ``one`` ... ``f`` -> ``six`` in the training data. Users later send strings
with ``g`` and ``h`` (``seven``, ``eight``), which v1 never saw, and correct the outputs.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = dict(
    zip("abcdefgh", ["one", "two", "three", "four", "five", "six", "seven", "eight"], strict=True)
)
KNOWN = "abcdef"


def gloss(source: str) -> str:
    return " ".join(WORDS[c] for c in source)


def strings(letters: str, n: int, seed: int, longest: int = 4) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        s = "".join(rng.choice(letters) for _ in range(rng.randint(1, longest)))
        if s not in out:
            out.append(s)
    return out


def write_pairs_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    rows = ["source,target", *(f"{s},{gloss(s)}" for s in strings(KNOWN, n, seed))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def recipe_text(source: str, feature: str = "numbers", epochs: int = 30, **extra: object) -> str:
    more = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    return (
        f"feature: {feature}\n"
        "task: text_to_text\n"
        "seed: 1\n"
        "text_to_text:\n"
        f"  source: {source}\n"
        "  source_language: xx\n"
        "  target_language: en\n"
        "  model: {embedding: 16, hidden: 32, source_tokens: char}\n"
        f"  epochs: {epochs}\n"
        "  batch_size: 16\n"
        "  learning_rate: 0.01\n"
        "  time_budget_s: null\n"
        "  patience: 5\n"
        "  beam_size: 3\n"
        "  alternatives: 2\n"
        "  threads: 1\n"
        f"{more}"
        "split: {train: 0.7, val: 0.15, test: 0.15}\n"
        "evaluate: {bootstrap_resamples: 200}\n"
        "gate: {feedback_holdout: 0.5}\n"
    )
