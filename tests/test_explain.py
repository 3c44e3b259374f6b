"""Occlusion explanations: Chinese words (jieba) or characters, English words."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiflywheel.errors import MissingExtraError
from aiflywheel.tasks.assistant import bm25
from aiflywheel.tasks.text_classification.explain import explain_prediction, split_tokens
from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import sentiment_rows  # noqa: E402

TEXT = "物流太慢了, terrible!"


def _tokens(text: str) -> list[str]:
    return [text[start:end] for start, end in split_tokens(text)]


def test_chinese_is_occluded_word_by_word_and_english_by_word() -> None:
    pytest.importorskip("jieba")
    assert _tokens(TEXT) == ["物流", "太慢", "了", ",", "terrible", "!"]
    rows = sentiment_rows()
    model = TfidfBaseline().fit([t for t, _ in rows], [label for _, label in rows])
    pieces = explain_prediction(model, TEXT)
    assert "".join(token for token, _ in pieces) == TEXT
    assert [token for token, _ in pieces if token.strip()] == _tokens(TEXT)


def test_without_jieba_chinese_falls_back_to_characters(monkeypatch) -> None:
    def missing() -> None:
        raise MissingExtraError("Chinese word segmentation", "pip install 'aiflywheel[assistant]'")

    monkeypatch.setattr(bm25, "jieba_module", missing)
    assert _tokens(TEXT) == ["物", "流", "太", "慢", "了", ",", "terrible", "!"]
