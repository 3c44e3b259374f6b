"""What a generation logs (``predictions.output``) and what feedback may say about it."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from aiflywheel.core.task import FeedbackPayload, PredictionPayload


class GenerationOutput(PredictionPayload):
    """A generation: ``label`` is ``generated``; the candidates, the prompt (text or chat
    messages) and the sampling settings that made them."""

    candidates: list[str] = Field(default_factory=list, description="The n responses.")
    prompt: str = Field("", description="The prompt text (completions).")
    messages: list[list[str]] = Field(
        default_factory=list, description="The chat turns as [role, content] (chat)."
    )
    sampling: dict[str, Any] = Field(default_factory=dict, description="How they were sampled.")


class GenerationFeedback(FeedbackPayload):
    """A choice among the candidates (their 0-based index), a thumb, an edited response."""

    misplaced: ClassVar[dict[str, str]] = {
        "corrected_label": "this feature generates text: send chosen (a candidate's index) or "
        "corrected_response, not corrected_label",
        "corrected_answer": "this feature generates text: send corrected_response, not "
        "corrected_answer",
    }

    chosen: int | None = Field(
        None, ge=0, description="Index of the best candidate among the n answered."
    )
    corrected_response: str | None = Field(
        None, min_length=1, max_length=20_000, description="The response as it should have been."
    )

    @field_validator("chosen")
    @classmethod
    def _a_candidate(cls, chosen: int | None, info: ValidationInfo) -> int | None:
        prediction = (info.context or {}).get("prediction")
        candidates = list(getattr(prediction, "candidates", None) or [])
        if chosen is not None and prediction is not None and chosen >= len(candidates):
            raise ValueError(
                f"chosen must be the index of one of the {len(candidates)} candidates "
                f"(0 to {len(candidates) - 1}), got {chosen}"
            )
        return chosen
