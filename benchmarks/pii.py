"""Precision, recall and F1 of the PII detectors on a labeled corpus, and scan speed.

The second table scores the same corpus with every labeled value hidden by format
characters (bidi marks, zero-width spaces, word joiners) inside it.

Usage::

    python benchmarks/pii.py [--corpus PATH] [--errors] [--speed-texts N]

The corpus is JSON lines: ``{"id", "lang", "text", "entities": [{"type", "value"}]}``;
by default the one shipped as ``aiflywheel/data/pii_corpus.jsonl``. Matches are scored
per line as a multiset of ``(type, value)`` pairs, so a span found with the right type
and the exact value is a true positive, anything else found is a false positive and
anything labeled but not found is a false negative.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import sys
import time
from collections import Counter
from pathlib import Path

try:
    from aiflywheel.data.pii import PII_TYPES, find_pii
except ModuleNotFoundError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from aiflywheel.data.pii import PII_TYPES, find_pii


def load_corpus(path: Path | None) -> list[dict]:
    """Read the corpus at ``path``, or the one shipped with the package."""
    if path is None:
        resource = importlib.resources.files("aiflywheel.data") / "pii_corpus.jsonl"
        text = resource.read_text(encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def score(rows: list[dict]) -> tuple[dict[str, Counter], list[str]]:
    """Count tp/fp/fn per type over ``rows``; also return one line per error."""
    counts: dict[str, Counter] = {kind: Counter() for kind in PII_TYPES}
    errors: list[str] = []
    for row in rows:
        gold = Counter((e["type"], e["value"]) for e in row["entities"])
        found = Counter((m.type, m.value) for m in find_pii(row["text"]))
        for (kind, _value), n in (gold & found).items():
            counts[kind]["tp"] += n
        for (kind, value), n in (found - gold).items():
            counts[kind]["fp"] += n
            errors.append(f"FP {row['id']:>10} {kind:<10} {value!r}")
        for (kind, value), n in (gold - found).items():
            counts[kind]["fn"] += n
            errors.append(f"FN {row['id']:>10} {kind:<10} {value!r}")
    return counts, errors


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def format_table(counts: dict[str, Counter]) -> str:
    """Render per-type and overall (micro-averaged) precision/recall/F1/support."""
    lines = [f"{'type':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    total: Counter = Counter()
    for kind in PII_TYPES:
        c = counts[kind]
        total.update(c)
        lines.append(_row(kind, c))
    lines.append("-" * len(lines[0]))
    lines.append(_row("overall", total))
    return "\n".join(lines)


def _row(name: str, c: Counter) -> str:
    p = _ratio(c["tp"], c["tp"] + c["fp"])
    r = _ratio(c["tp"], c["tp"] + c["fn"])
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    support = c["tp"] + c["fn"]
    return f"{name:<12}{p:>10.3f}{r:>10.3f}{f1:>10.3f}{support:>10d}"


# Invisible characters a hostile user puts inside a value: LRM, ZWSP, word joiner, RLO/PDF.
HIDING = ("\u200e", "\u200b", "\u2060", "\u202e", "\u202c")


def obfuscated(rows: list[dict]) -> list[dict]:
    """The corpus with every labeled value hidden: a format character after every third
    character of the value (bidi marks, zero-width spaces, word joiners, in turn); the
    gold values are the hidden ones, as they stand in the text."""
    out = []
    for row in rows:
        text, hidden = row["text"], {}
        for entity in row["entities"]:
            value = entity["value"]
            if value not in hidden:  # every occurrence of a value, hidden the same way
                mark = HIDING[len(hidden) % len(HIDING)]
                hidden[value] = "".join(
                    ch + mark if k % 3 == 2 and k < len(value) - 1 else ch
                    for k, ch in enumerate(value)
                )
                text = text.replace(value, hidden[value])
        entities = [{"type": e["type"], "value": hidden[e["value"]]} for e in row["entities"]]
        out.append({**row, "text": text, "entities": entities})
    return out


def scan_speed(rows: list[dict], n_texts: int) -> tuple[int, float]:
    """Scan ``n_texts`` corpus texts (cycling through it); return (count, seconds)."""
    texts = [row["text"] for row in rows]
    batch = (texts * (n_texts // len(texts) + 1))[:n_texts]
    started = time.perf_counter()
    for text in batch:
        find_pii(text)
    return len(batch), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Print the quality table (and scan speed) for the corpus; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="JSONL corpus to score")
    parser.add_argument("--errors", action="store_true", help="list every FP and FN")
    parser.add_argument(
        "--speed-texts", type=int, default=35_000, help="texts to scan for the speed figure"
    )
    args = parser.parse_args(argv)

    rows = load_corpus(args.corpus)
    counts, errors = score(rows)
    langs = Counter(row.get("lang", "?") for row in rows)
    negatives = sum(1 for row in rows if not row["entities"])
    print(
        f"corpus: {len(rows)} lines ({', '.join(f'{k} {v}' for k, v in sorted(langs.items()))}; "
        f"{negatives} without PII)"
    )
    print(format_table(counts))
    if args.errors and errors:
        print()
        print("\n".join(errors))
    hidden_counts, _ = score(obfuscated(rows))
    print("\nthe same values hidden by format characters (U+200E, U+200B, U+2060, U+202E/C):")
    print(format_table(hidden_counts))
    if args.speed_texts > 0 and rows:
        n, seconds = scan_speed(rows, args.speed_texts)
        print(f"\nscan: {n} texts in {seconds:.2f} s ({n / seconds:,.0f} texts/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
