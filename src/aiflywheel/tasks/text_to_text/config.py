"""The text_to_text task's recipe section (``text_to_text:``): where the pairs are, the
direction, the LSTM encoder-decoder's size, decoding, limits and the retrain gate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Seq2SeqModelConfig(_Strict):
    """The LSTM encoder-decoder with Luong (general) attention, trained from scratch."""

    embedding: int = Field(128, ge=4, le=1024, description="Token embedding size.")
    hidden: int = Field(256, ge=4, le=2048, description="LSTM hidden size (encoder and decoder).")
    layers: int = Field(1, ge=1, le=4, description="Stacked LSTM layers.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout between layers and on outputs.")
    max_vocab: int = Field(
        20_000, ge=10, description="Most tokens per side; rarer ones become <unk>."
    )
    source_tokens: Literal["auto", "char", "word"] = Field(
        "auto",
        description="How the source is split: 'char' (one token per character), 'word' (words "
        "and punctuation); 'auto': characters for zh/ja, words otherwise.",
    )
    target_tokens: Literal["auto", "char", "word"] = Field(
        "auto", description="How the target is split (see source_tokens)."
    )


class Seq2SeqGateConfig(_Strict):
    """When a retrained translator replaces the champion (chrF on the same rows)."""

    min_chrf_gain: float = Field(
        0.0,
        ge=-100,
        le=100,
        description="Minimum chrF gain of the candidate over the champion, in chrF points, on "
        "the frozen test split plus held-out feedback (significance and feedback_holdout come "
        "from the recipe's gate section).",
    )
    max_slice_drop: float = Field(
        3.0,
        ge=0,
        le=100,
        description="Refuse when the frozen test split or the held-out feedback alone loses "
        "more than this many chrF points.",
    )


class TextToTextConfig(_Strict):
    """Source -> target pairs (task text_to_text): translation, rewriting, normalization."""

    source: str = Field(
        ...,
        description="A CSV, TSV or JSONL file of pairs (relative to the recipe), or a demo "
        "set: 'demo:cedict-zh-en' (CC-CEDICT words and phrases with their English glosses).",
    )
    test_source: str | None = Field(
        None,
        description="Optional second test set, reported on its own (e.g. in-domain sentences): "
        "a file like source, or 'demo:faq-zh-en' (the help center's aligned FAQ questions).",
    )
    format: Literal["auto", "csv", "tsv", "jsonl"] = Field(
        "auto", description="File format; 'auto' decides by the file extension."
    )
    source_column: str = Field("source", description="Column (or JSON key) of the input text.")
    target_column: str = Field("target", description="Column (or JSON key) of the output text.")
    source_language: str = Field(
        "zh", min_length=2, max_length=16, description="Language of the source, e.g. zh, en."
    )
    target_language: str = Field(
        "en", min_length=2, max_length=16, description="Language of the target, e.g. en, zh."
    )
    max_source_chars: int = Field(
        200, ge=1, le=10_000, description="Longest source accepted (rows and requests)."
    )
    max_target_chars: int = Field(
        200, ge=1, le=10_000, description="Longest target accepted in training rows."
    )
    sample: int | None = Field(
        None, gt=0, description="Keep a seeded sample of this many pairs; null keeps all."
    )
    model: Seq2SeqModelConfig = Field(
        default_factory=Seq2SeqModelConfig, description="The encoder-decoder's size."
    )
    epochs: float = Field(20, gt=0, le=1000, description="Most passes over the training pairs.")
    batch_size: int = Field(64, ge=1, le=4096, description="Pairs per training step.")
    learning_rate: float = Field(2e-3, gt=0, lt=1, description="Adam learning rate.")
    time_budget_s: float | None = Field(
        600,
        gt=0,
        description="Stop training after this many seconds (the best checkpoint on validation "
        "loss is kept); null: no limit.",
    )
    patience: int = Field(
        3, ge=1, description="Stop after this many epochs without a better validation loss."
    )
    beam_size: int = Field(4, ge=1, le=16, description="Beam width when decoding (1: greedy).")
    alternatives: int = Field(
        3, ge=0, le=16, description="Beam alternatives a served answer lists (at most beam_size)."
    )
    max_output_tokens: int = Field(
        64, ge=1, le=1024, description="Most tokens a decoded output may have."
    )
    max_texts: int = Field(32, ge=1, le=1024, description="Most texts in one transform request.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; null: every core.")
    gate: Seq2SeqGateConfig = Field(
        default_factory=Seq2SeqGateConfig, description="The retrain gate's chrF thresholds."
    )
