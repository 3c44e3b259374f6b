"""A served text_to_text version: the translator plus the recipe's limits and decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiflywheel.errors import DataError
from aiflywheel.tasks.text_to_text.config import TextToTextConfig
from aiflywheel.tasks.text_to_text.model import Seq2SeqTranslator


@dataclass
class TranslatorPredictor:
    """``transform(texts)``: each text's output, score and beam alternatives."""

    model: Seq2SeqTranslator
    config: TextToTextConfig

    def check(self, text: str, where: str = "text") -> str:
        """The text with its whitespace collapsed, or a one-line DataError."""
        cleaned = " ".join(str(text).split())
        if not cleaned:
            raise DataError(f"{where}: empty; send the text to transform")
        if len(cleaned) > self.config.max_source_chars:
            raise DataError(
                f"{where}: {len(cleaned)} characters, more than this feature's "
                f"max_source_chars {self.config.max_source_chars}; split it"
            )
        return cleaned

    def transform(
        self, texts: list[str], *, beam_size: int | None = None, alternatives: int | None = None
    ) -> list[dict[str, Any]]:
        beam = self.config.beam_size if beam_size is None else beam_size
        keep = self.config.alternatives if alternatives is None else alternatives
        out = []
        for t in self.model.translate(
            texts,
            beam_size=beam,
            alternatives=min(keep, max(0, beam - 1)),
            max_tokens=self.config.max_output_tokens,
        ):
            out.append(
                {
                    "output": t.text,
                    "score": round(t.score, 4),
                    "alternatives": [{"output": a, "score": s} for a, s in t.alternatives],
                }
            )
        return out

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """``aiflywheel.load(feature).predict(texts)``: the same as ``transform``."""
        return self.transform([self.check(t) for t in texts])
