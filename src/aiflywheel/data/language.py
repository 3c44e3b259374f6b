"""Which language a text is in, by script: zh (Han), en (Latin), mixed or other.

Script counting is enough for the zh/en mix the product handles and needs no model.
A Han character carries about as much as an English word, so Han characters are
weighed against Latin words: a text is ``zh`` or ``en`` when that side has at least
80% of the weight, ``mixed`` when both sides are present below that, ``other`` with
neither (digits, emoji, other scripts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
LANGUAGES = ("zh", "en", "mixed", "other")


def detect_language(text: str) -> str:
    han = len(_HAN.findall(text))
    words = len(_LATIN_WORD.findall(text))
    total = han + words
    if total == 0:
        return "other"
    share = han / total
    if share >= 0.8:
        return "zh"
    if share <= 0.2:
        return "en"
    return "mixed"


def language_mix(texts: Iterable[str]) -> dict[str, int]:
    counts = Counter(detect_language(t) for t in texts)
    return {lang: counts.get(lang, 0) for lang in LANGUAGES}
