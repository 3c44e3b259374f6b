"""The assistant's recipe section (``assistant:``): knowledge base, retrieval, answer
policy and generator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiflywheel.tasks.assistant.generators import GeneratorSettings

if TYPE_CHECKING:
    from aiflywheel.tasks.assistant.retrieval import FusionSettings


class AssistantGateConfig(BaseModel):
    """When a retrained assistant (``flywheel retrain``: the knowledge base plus accepted
    answers as FAQ entries) may replace the champion. Both versions answer the frozen
    evaluation set and the held-out feedback questions; figures are in points (0-100)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_accuracy_gain: float = Field(
        0.0,
        ge=-100,
        le=100,
        description="Minimum answer-accuracy gain of the candidate over the champion, in "
        "points, on the answerable evaluation questions plus the held-out feedback.",
    )
    require_significance: bool = Field(
        False,
        description="Also require the paired-bootstrap 95% CI of that gain to lie above zero "
        "(off by default: a handful of staff answers moves only a handful of questions).",
    )
    max_eval_accuracy_drop: float = Field(
        2.0,
        ge=0,
        le=100,
        description="Refuse when answer accuracy on the frozen evaluation set alone drops by "
        "more than this many points: what the help center answered must stay answered "
        "(an accepted answer that contradicts it shows here).",
    )
    max_handoff_precision_drop: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Refuse when handoff precision (handoffs that needed a person) drops by "
        "more than this many points.",
    )
    max_handoff_recall_drop: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Refuse when handoff recall (questions needing a person that reach one) "
        "drops by more than this many points.",
    )
    feedback_holdout: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Share of accepted answers kept out of the knowledge base to judge both "
        "versions (chosen by a hash of the feedback id, so stable across retrains).",
    )
    min_feedback: int = Field(
        1,
        ge=0,
        description="Retrain only when at least this many accepted answers are new to the "
        "champion's knowledge base.",
    )
    answer_match: float = Field(
        0.8,
        gt=0,
        le=1,
        description="A reply to a held-out feedback question is right when it is not a "
        "handoff and states the accepted answer: contains its text (case, spaces, "
        "punctuation and citation markers ignored) or at least this share of its distinct "
        "words.",
    )


class JudgeConfig(BaseModel):
    """The learned answerability judge (``aiflywheel.tasks.assistant.judge``): trained by
    ``flywheel train`` and ``flywheel retrain`` on pairs built from the knowledge base
    and accepted feedback; it reorders the top hits and its best probability replaces
    the cosine as the confidence the handoff threshold is calibrated on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["features", "none"] = Field(
        "none",
        description="'features': a logistic regression over retrieval and word-overlap "
        "features of each (question, hit) pair; 'none': the best cosine similarity decides "
        "(measured on the shipped help center with e5-small: the judge's answerable-vs-not "
        "AUC is higher, 0.83/0.90 against 0.81/0.84 on the calibration/held-out halves, "
        "but at the calibrated threshold its handoff precision and answer accuracy are "
        "lower, so 'none' is the default).",
    )
    l2: float = Field(
        1.0, gt=0, le=10_000, description="L2 penalty of the judge's logistic regression."
    )
    max_questions: int = Field(
        5000,
        ge=10,
        le=1_000_000,
        description="Most training questions (each is one retrieval): every one learned "
        "from staff answers and feedback, then a stable sample of those built from the "
        "knowledge base (the shipped help center gives 840).",
    )
    reorder: bool = Field(
        True,
        description="Reorder the top hits by the judge's probability (off: keep the "
        "retrieval order and use the judge for the confidence only).",
    )
    role: Literal["confidence", "no_answer"] = Field(
        "confidence",
        description="'confidence': the judge's best probability replaces the cosine for "
        "the handoff threshold; 'no_answer': the cosine keeps that role and the judge "
        "decides only when no passage sentence shares enough words with the question (the "
        "extractive 'I don't know'): at or above a probability calibrated with the "
        "handoff threshold the first passage is quoted instead of handing off.",
    )


class AssistantConfig(BaseModel):
    """A customer-service assistant (task ``assistant``): knowledge base, retrieval,
    answer policy and generator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    knowledge_base: str = Field(
        ...,
        min_length=1,
        description="Folder (or file) of FAQ files (CSV/JSONL with question, answer, optional "
        "category) and documents (Markdown, TXT, HTML), relative to the recipe file; "
        "'demo:help-center' is the shipped bilingual help center of a fictional store.",
    )
    eval_set: str | None = Field(
        None,
        description="JSONL evaluation questions (see aiflywheel.tasks.assistant.evaluation) that "
        "calibrate the thresholds and measure the assistant; 'demo:help-center-eval' is the "
        "shipped one. Needed unless both thresholds are set.",
    )
    encoder: str = Field(
        "e5-small",
        min_length=1,
        description="Dense encoder: 'e5-small' (multilingual, packaged), 'minilm' (English), "
        "a local transformers folder, or a hub id when downloads are allowed.",
    )
    chunk_chars: int = Field(
        350, ge=80, le=5000, description="Most characters of one document chunk."
    )
    chunk_overlap: int = Field(
        60, ge=0, le=1000, description="Characters a chunk shares with the one before it."
    )
    mode: Literal["hybrid", "bm25", "dense"] = Field(
        "hybrid",
        description="Retrieval: BM25 and dense embeddings fused (see fusion), or one of them "
        "alone.",
    )
    fusion: Literal["relative", "rrf"] = Field(
        "relative",
        description="How hybrid retrieval fuses the two: 'relative' mixes each retriever's "
        "scores rescaled over the candidates, (1 - bm25_weight) * dense + bm25_weight * BM25 "
        "(measured on the demo help center: hit@5 0.925 against 0.868 for 'rrf'); 'rrf' is "
        "reciprocal rank fusion, the sum of 1 / (rrf_k + rank).",
    )
    bm25_weight: float = Field(
        0.3, ge=0, le=1, description="Share of the BM25 score in 'relative' fusion."
    )
    top_k: int = Field(5, ge=1, le=50, description="Chunks retrieved per question.")
    candidates: int = Field(
        50, ge=1, le=1000, description="Candidates each retriever gives to the fusion."
    )
    rrf_k: int = Field(
        60, ge=1, le=1000, description="Reciprocal-rank-fusion constant ('rrf' fusion)."
    )
    passages: int = Field(
        4, ge=1, le=20, description="Passages a generator composes an answer from."
    )
    handoff_below: float | None = Field(
        None,
        ge=0,
        le=1.01,
        description="Hand off when the best chunk's cosine similarity (the judge's best "
        "probability, with a judge) is below this; null calibrates it on the evaluation set.",
    )
    faq_at_least: float | None = Field(
        None,
        ge=0,
        le=1.01,
        description="Return a FAQ entry's curated answer when its similarity reaches this; "
        "null calibrates it on the evaluation set.",
    )
    handoff_target_recall: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Calibration: the share of questions needing a person that must be "
        "handed off; among thresholds reaching it, the most precise is taken.",
    )
    faq_target_precision: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Calibration: how often a curated FAQ answer must be the right entry.",
    )
    held_out_share: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of the evaluation set kept out of calibration (chosen by a hash "
        "of each question id); the held-out figures are the honest ones.",
    )
    max_message_chars: int = Field(
        4000, ge=10, le=100_000, description="Longest user message accepted."
    )
    history_turns: int = Field(
        6, ge=0, le=50, description="Earlier turns of a session given to the generator."
    )
    generator: GeneratorSettings = Field(
        default_factory=GeneratorSettings,
        description="How answers are composed from passages: extractive (no LLM), local "
        "(a packaged GGUF model) or openai (any OpenAI-compatible endpoint).",
    )

    judge: JudgeConfig = Field(
        default_factory=JudgeConfig,
        description="Learned answerability judge and reranker (kind 'features' or 'none').",
    )

    gate: AssistantGateConfig = Field(
        default_factory=AssistantGateConfig,
        description="Promotion gate of `flywheel retrain` (accepted answers as new FAQ "
        "entries, thresholds recalibrated).",
    )

    @model_validator(mode="after")
    def _calibrated_or_set(self) -> AssistantConfig:
        if self.eval_set is None and (self.handoff_below is None or self.faq_at_least is None):
            raise ValueError(
                "assistant needs eval_set to calibrate its thresholds, or both handoff_below "
                "and faq_at_least"
            )
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError(
                f"assistant.chunk_overlap {self.chunk_overlap} must be below chunk_chars "
                f"{self.chunk_chars}"
            )
        return self

    def fusion_settings(self) -> FusionSettings:
        """The ``FusionSettings`` hybrid retrieval runs with."""
        from aiflywheel.tasks.assistant.retrieval import FusionSettings

        return FusionSettings(fusion=self.fusion, bm25_weight=self.bm25_weight, rrf_k=self.rrf_k)
