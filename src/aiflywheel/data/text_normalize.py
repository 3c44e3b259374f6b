"""Text normalization shared by cleaning, deduplication and the leakage check."""

from __future__ import annotations

import html
import re
import unicodedata

_TAG = re.compile(r"<(?:[a-zA-Z][^<>]{0,2000}|/[a-zA-Z][^<>]{0,200}|!--.*?--)>", re.DOTALL)
_BLOCK_TAG = re.compile(r"<\s*(?:br|/p|p|/div|div|li|/li|tr|/tr)\b[^<>]*>", re.IGNORECASE)
_SCRIPT = re.compile(r"<(script|style)\b[^<>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
_WHITESPACE = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[\W_]+")
# Invisible characters that are not category Cc but still pollute text.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u2060\ufeff\u00ad"))


def strip_html(text: str) -> str:
    """Remove script/style blocks and tags (block tags become spaces), decode entities."""
    if "<" in text:
        text = _SCRIPT.sub(" ", text)
        text = _BLOCK_TAG.sub(" ", text)
        text = _TAG.sub("", text)
    if "&" in text and _ENTITY.search(text):
        text = html.unescape(text)
    return text


def remove_control_chars(text: str) -> str:
    """Drop control characters (keeping tab and newline) and invisible format characters."""
    text = text.translate(_INVISIBLE)
    if text.isprintable():
        return text
    return "".join(
        ch for ch in text if ch in "\t\n" or unicodedata.category(ch) not in ("Cc", "Cs", "Co")
    )


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def near_duplicate_key(text: str) -> str:
    """Text reduced to its letters and digits, case-folded: equal keys are near duplicates."""
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", text).casefold())
