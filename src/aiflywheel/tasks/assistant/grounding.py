"""Grounding post-check: is every sentence of an answer backed by the passages it cites?

``check_support(answer, passages, cited)`` splits the answer into sentences and checks
each one against its evidence: the passages the sentence itself cites ([1], 【2】, ...),
or, for a sentence without a citation, the union of all given passages. A sentence is
supported when

- at least ``MIN_COVERAGE`` (0.5) of its content tokens occur in the evidence, where
  content tokens are lower-cased English words without stop words (crudely stemmed:
  "shipping" ~ "ship") and Chinese character bigrams (single characters for one-character
  runs); and
- every number in it (digits after NFKC, so full-width digits count; thousands
  separators dropped) occurs among the evidence's numbers: a wrong number makes the
  sentence unsupported however well the words match; and
- every passage it cites exists (a citation [n] with n outside 1..len(passages) is a
  fabricated source).

Sentences without numbers that only say "I don't know" or point to a human ("contact
us", "转人工") are exempt, as are sentences without content tokens or numbers ("Sure!"). The answer
is supported when no sentence is unsupported. ``score`` is the mean coverage over the
checked sentences (1.0 when none needed checking). Everything here is deterministic.

The same tokenization (``simple_tokens``) and sentence splitting (``split_sentences``)
serve the extractive generator.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiflywheel.tasks.assistant.types import Chunk

# A sentence must have at least this share of its content tokens in its evidence.
MIN_COVERAGE = 0.5

Tokenizer = Callable[[str], list[str]]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]+|[a-z0-9]+(?:['’][a-z]+)?")
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
# [1] [1, 2] [1-3] 【1】 ［1］ ; brackets and digits after NFKC are ASCII except 【】.
CITATION_RE = re.compile(r"[\[【]\s*(\d+(?:\s*[,，、\-–]\s*\d+)*)\s*[\]】]")
# A sentence ends at 。！？；!?; (or . followed by a space/end) or a newline, and keeps
# the citation markers that directly follow its end ("... days. [1]").
_CITES = r"(?:\s*[\[【]\s*\d+(?:\s*[,，、\-–]\s*\d+)*\s*[\]】])*"
_SENTENCE_END_RE = re.compile(rf"(?:[。！？；!?;]+|\.(?=\s|$|\[|【)|\n+){_CITES}")

EN_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an the and or but if of to in on at by for with from as is are was were be been "
        "being am do does did doing have has had having i me my we our you your he she it its "
        "they them their this that these those there here what which who whom whose when where "
        "why how can could would should will shall may might must not no yes so than too very "
        "just also any some all each into out up down over about again then once please pls "
        "hi hello thanks thank get got tell know want need like much many more most",
    )
)
ZH_STOP_CHARS = frozenset("的了吗呢吧啊呀么是在我你他她它们这那有和与或也就都还请问怎如何什")

_EXEMPT_RE = re.compile(
    r"(i\s+(?:do\s*n[o']?t|don’t|cannot|can'?t|could\s*n[o']?t|am\s+not\s+sure)"
    r"\s+(?:know|find|answer|say|tell|help|see)"
    r"|not\s+(?:sure|covered|in\s+(?:the|our)\s+(?:passages|help\s+center))"
    r"|(?:contact|reach|call|email)\s+(?:us|our|a\s+(?:human|person|agent)|support|customer)"
    r"|(?:human|live)\s+agent|(?:connect|transfer|hand)\w*\s+you\s+(?:over\s+)?to"
    r"|(?:speak|talk|chat)\s+(?:to|with)\s+(?:a|an|our|one\s+of\s+our)\s"
    r"|no\s+information|couldn'?t\s+find|could\s+not\s+find"
    r"|不知道|不清楚|不确定|无法回答|没有找到|未找到|没有相关|无相关|转人工|人工客服|联系客服"
    r"|联系我们|客服人员|帮您转接|为您转接)",
    re.IGNORECASE,
)


def normalize(text: str) -> str:
    """NFKC and lower case: full-width letters, digits and brackets become ASCII."""
    return unicodedata.normalize("NFKC", text).lower()


def simple_tokens(text: str) -> list[str]:
    """Dependency-free tokens: English words (stop words kept) and, per run of Chinese
    characters, its single characters and its character bigrams."""
    tokens: list[str] = []
    for piece in _TOKEN_RE.findall(normalize(text)):
        if not piece[0].isascii():
            tokens.extend(piece)
            tokens.extend(piece[i : i + 2] for i in range(len(piece) - 1))
        else:
            tokens.append(piece)
    return tokens


def light_stem(word: str) -> str:
    """A crude English stem, enough to match inflections: "shipping" ~ "ship",
    "refunded" ~ "refund", "boxes" ~ "box", "days" ~ "day". Other words pass unchanged."""
    if not word.isascii() or not word.isalpha():
        return word
    stem = word
    if len(word) > 5 and word.endswith("ing"):
        stem = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        stem = word[:-2]
    elif len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    if stem != word and len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
        stem = stem[:-1]
    return stem


def content_tokens(text: str) -> set[str]:
    """Tokens that carry meaning for the support check: English words minus stop words
    (``light_stem``-med) and Chinese character bigrams minus bigrams made only
    of function characters (a one-character run counts as itself)."""
    found: set[str] = set()
    for piece in _TOKEN_RE.findall(strip_citations(normalize(text))):
        if piece[0].isascii():
            if piece in EN_STOPWORDS or piece.isdigit():
                continue
            found.add(light_stem(piece))
        elif len(piece) == 1:
            if piece not in ZH_STOP_CHARS:
                found.add(piece)
        else:
            for i in range(len(piece) - 1):
                bigram = piece[i : i + 2]
                if not (bigram[0] in ZH_STOP_CHARS and bigram[1] in ZH_STOP_CHARS):
                    found.add(bigram)
    return found


def numbers(text: str) -> set[str]:
    """The numbers in ``text`` as digit strings (NFKC; thousands separators dropped,
    decimal points kept, so "1,299" and "1299" match but "5" and "7" do not)."""
    found = set()
    for raw in _NUMBER_RE.findall(strip_citations(unicodedata.normalize("NFKC", text))):
        value = re.sub(r",(?=\d{3}(?:\D|$))", "", raw)
        found.add(value.rstrip(".,"))
    return found


def strip_citations(text: str) -> str:
    """``text`` without citation markers like [1], [2, 3] or 【1】."""
    return CITATION_RE.sub(" ", unicodedata.normalize("NFKC", text))


def citation_numbers(text: str) -> list[int]:
    """Every passage number cited in ``text`` in order of first appearance, ranges
    ([1-3]) expanded, without bounds checking."""
    found: list[int] = []
    for match in CITATION_RE.finditer(unicodedata.normalize("NFKC", text)):
        for part in re.split(r"\s*[,，、]\s*", match.group(1)):
            bounds = re.split(r"\s*[\-–]\s*", part)
            if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
                low, high = int(bounds[0]), int(bounds[1])
                values = range(low, high + 1) if 0 < high - low < 20 else [low, high]
            else:
                values = [int(b) for b in bounds if b.isdigit()]
            for value in values:
                if value not in found:
                    found.append(value)
    return found


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (zh and en), each keeping the citation markers that follow
    it, stripped; empty pieces dropped."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        piece = text[start : match.end()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    merged: list[str] = []
    for sentence in sentences:
        # A piece that is only citations belongs to the sentence before it.
        if merged and not strip_citations(sentence).strip():
            merged[-1] = f"{merged[-1]} {sentence}"
        else:
            merged.append(sentence)
    return merged


def is_exempt(sentence: str) -> bool:
    """Whether a sentence only admits not knowing or points the customer to a person.

    A sentence with a number is never exempt: "call us at 400-..." must still match
    the passages."""
    return not numbers(sentence) and bool(_EXEMPT_RE.search(normalize(sentence)))


@dataclass
class SupportCheck:
    """Result of ``check_support``: whether every sentence is supported, the ones that
    are not, and the mean evidence coverage of the checked sentences."""

    supported: bool
    unsupported_sentences: list[str] = field(default_factory=list)
    score: float = 1.0


def sentence_coverage(sentence: str, evidence: str) -> float:
    """Share of the sentence's content tokens found in ``evidence`` (1.0 when it has none)."""
    wanted = content_tokens(sentence)
    if not wanted:
        return 1.0
    return len(wanted & content_tokens(evidence)) / len(wanted)


def check_support(answer: str, passages: Sequence[Chunk], cited: list[int]) -> SupportCheck:
    """Check every sentence of ``answer`` against the passages it cites (1-based
    positions in ``passages``), or against all passages when it cites none; ``cited``
    is the answer's overall citation list, and a number in it outside the passages
    makes the answer unsupported. See the module docstring for the rules."""
    texts = [chunk.passage for chunk in passages]
    bad_cites = [n for n in cited if not 1 <= n <= len(texts)]
    unsupported: list[str] = []
    coverages: list[float] = []
    sentences = split_sentences(answer)
    exempt = 0
    for sentence in sentences:
        own = citation_numbers(sentence)
        if any(not 1 <= n <= len(texts) for n in own):
            unsupported.append(sentence)
            coverages.append(0.0)
            continue
        if is_exempt(sentence):
            exempt += 1
            continue
        claims = content_tokens(sentence)
        claimed_numbers = numbers(sentence)
        if not claims and not claimed_numbers:
            continue
        evidence = "\n".join(texts[n - 1] for n in own) if own else "\n".join(texts)
        coverage = sentence_coverage(sentence, evidence)
        numbers_ok = claimed_numbers <= numbers(evidence)
        coverages.append(coverage if numbers_ok else 0.0)
        if coverage < MIN_COVERAGE or not numbers_ok:
            unsupported.append(sentence)
    if sentences and not coverages and not exempt:
        # Words without a single content word or number ("how how how", "Yes."): an
        # answer that states nothing from the passages is not a grounded answer.
        unsupported = [" ".join(sentences)]
        coverages = [0.0]
    score = sum(coverages) / len(coverages) if coverages else 1.0
    return SupportCheck(
        supported=not unsupported and not bad_cites,
        unsupported_sentences=unsupported,
        score=round(score, 4),
    )
