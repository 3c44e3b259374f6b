"""The text generation task's recipe section, ``generation:``: the data (pairs, chat
transcripts or plain texts), the model and how it is tuned, evaluation sampling, serving
limits, and the preference gate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSection(_Strict):
    """LoRA adapter settings (method: lora)."""

    r: int = Field(8, ge=1, le=256, description="Rank of the low-rank update.")
    alpha: int = Field(16, ge=1, le=1024, description="Scaling numerator (alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")


class SamplingSection(_Strict):
    """How evaluation samples candidates (recorded in the report)."""

    n: int = Field(2, ge=1, le=16, description="Samples per held-out prompt.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature (0: greedy).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, description="Seed of the samples.")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Longest sample, in tokens.")
    max_prompts: int = Field(
        50, ge=1, le=100_000, description="Held-out prompts sampled at most (perplexity uses all)."
    )


class ServeLimits(_Strict):
    """What one generation request may ask of the server."""

    max_tokens: int = Field(256, ge=1, le=32_768, description="Default and ceiling of max_tokens.")
    max_n: int = Field(8, ge=1, le=64, description="Most candidates (n) in one request.")
    max_total_tokens: int = Field(
        1024,
        ge=1,
        description="Most n x max_tokens one request may ask for; more answers 422 naming it.",
    )
    max_prompt_chars: int = Field(8000, ge=1, description="Longest prompt accepted, in characters.")


class PreferenceGate(_Strict):
    """The retrain gate's thresholds (besides gate.min_feedback and gate.feedback_holdout)."""

    min_preference_gain: float = Field(
        0.0,
        description="Candidate's preference accuracy (share of held-out pairs where it prefers "
        "the chosen response) minus the champion's, at least this (points).",
    )
    max_perplexity_increase: float = Field(
        0.10,
        ge=0,
        description="Held-out perplexity may grow by at most this share (0.1: 10%).",
    )
    max_chrf_drop: float = Field(
        5.0, ge=0, description="Held-out chrF may drop by at most this many points."
    )


class GenerationConfig(_Strict):
    """A text generator (task text_generation): data, base model, tuning, evaluation."""

    source: str = Field(..., description="CSV or JSONL file of rows, relative to the recipe.")
    format: Literal["auto", "csv", "jsonl"] = Field(
        "auto", description="How to read source; 'auto' goes by the file's suffix."
    )
    kind: Literal["auto", "pairs", "chat", "text"] = Field(
        "auto",
        description="'pairs': prompt -> response columns; 'chat': a messages column of "
        "{role, content} turns ending with the assistant; 'text': plain texts to continue; "
        "'auto': whichever columns are present.",
    )
    prompt_column: str = Field("prompt", description="Column with the prompt (pairs).")
    response_column: str = Field("response", description="Column with the response (pairs).")
    messages_column: str = Field("messages", description="Column with chat turns (chat).")
    text_column: str = Field("text", description="Column with the text (text).")
    language_column: str | None = Field(
        "language", description="Column with a language code; missing: detected per row."
    )
    model: str = Field(
        "smollm2-135m",
        description="Base model: a packaged alias (smollm2-135m, gemma3-270m), a .gguf file, a "
        "transformers folder, or a Hugging Face id (fetched only with FLYWHEEL_ALLOW_DOWNLOAD=1).",
    )
    method: Literal["lora", "full"] = Field("lora", description="LoRA adapter or all weights.")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        "auto",
        description="'chat': the tokenizer's chat template (an error when it has none); "
        "'plain': 'Prompt: ... Response:'; 'auto': chat when the tokenizer has a template.",
    )
    lora: LoraSection = Field(default_factory=LoraSection, description="LoRA settings.")
    max_length: int = Field(
        256, ge=16, le=32_768, description="Context used in training; a longer row is an error."
    )
    packing: bool = Field(False, description="Pack short rows into full-length sequences.")
    length_buckets: bool = Field(True, description="Batch rows of similar length together.")
    epochs: float = Field(3.0, gt=0, le=1000, description="Passes over the training rows.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    batch_size: int = Field(8, ge=1, le=1024, description="Rows per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="AdamW learning rate.")
    time_budget: float | Literal["auto"] | None = Field(
        None,
        description="Seconds of training at most; 'auto': measured steps/s sets the step count "
        "to fit 10 minutes; null: no limit.",
    )
    dpo_beta: float = Field(0.1, gt=0, le=10, description="DPO's beta (retrain on choices).")
    sampling: SamplingSection = Field(
        default_factory=SamplingSection, description="Evaluation sampling."
    )
    limits: ServeLimits = Field(default_factory=ServeLimits, description="Request limits.")
    gate: PreferenceGate = Field(default_factory=PreferenceGate, description="Retrain gate.")
