"""The customer-service assistant on the task contract: a question in, an answer, its
citations or an honest handoff out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from aiflywheel.core.task import Built, FeedbackPayload, PredictionPayload, Quality, Report
from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.errors import ModelError, RecipeError

ANSWER_SUMMARY_CHARS = 500


class AnswerOutput(PredictionPayload):
    """An assistant's turn in the prediction log: ``label`` is the answer's kind (answer,
    handoff, refusal, ...); the whole answer and its citations stay in the turn."""

    confidence: float | None = None
    answer: str = Field("", description=f"The answer's first {ANSWER_SUMMARY_CHARS} characters.")
    handoff: bool = False


class AnswerFeedback(FeedbackPayload):
    """What the assistant should have said, a thumb, a comment."""

    misplaced: ClassVar[Mapping[str, str]] = {
        "corrected_label": "this feature is an assistant: send corrected_answer, not "
        "corrected_label"
    }

    corrected_answer: str | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="What the answer should have said (a reviewer can turn it into a "
        "knowledge-base entry).",
    )


class AssistantTask:
    name = "assistant"
    summary = "questions in, cited answers or honest handoffs out, over a help center"
    conversational = True
    min_labels = 0
    owns_sections: tuple[str, ...] = ("assistant",)
    prediction_payload = AnswerOutput
    feedback_payload = AnswerFeedback
    batch_input = None  # answers in conversation (`flywheel ask`, /v1/chat/completions)

    predict_route = "/v1/chat/completions"

    def chat_handler(self):
        from aiflywheel.tasks.assistant.routes import handle_chat

        return handle_chat

    def check_recipe(self, recipe) -> None:
        if recipe.assistant is None:
            raise RecipeError(
                "missing required key 'assistant': task assistant needs its knowledge base "
                "and settings (see `flywheel init --template help-center`)"
            )

    def train(self, recipe, *, store, settings, report: Report) -> Built:
        from aiflywheel.tasks.assistant.build import build_assistant
        from aiflywheel.tasks.assistant.report_html import assistant_verdict

        result = build_assistant(recipe, store=store, settings=settings, report=report)
        return Built(
            feature=recipe.feature,
            run_id=result.run_id,
            run_dir=result.run_dir,
            version=result.version,
            status=result.status,
            headline=assistant_verdict(result.metrics),
            report_html=result.report_html,
            details=result,
        )

    def show_built(self, built: Built) -> None:
        from aiflywheel.tasks.assistant.cli import print_build

        print_build(built.details)

    def warm_up(self, served) -> None:
        """Nothing to do here: assistants are served (and warmed) by ``AssistantHost``."""
        return None

    def api_router(self):
        from aiflywheel.tasks.assistant.routes import router

        return router

    def quality(self, metrics: VersionMetrics | Mapping[str, Any]) -> Quality:
        m = VersionMetrics.of(metrics)
        if m.hit_at_5 is None:
            return Quality(metric="answer accuracy", value=None)
        others = {
            "hit@5": m.hit_at_5,
            "handoff P": m.handoff_precision,
            "handoff R": m.handoff_recall,
        }
        return Quality(
            metric="answer accuracy",
            value=m.answer_accuracy,
            ci=m.answer_accuracy_ci,
            others={name: value for name, value in others.items() if value is not None},
        )

    def load_predictor(self, model_path: str | Path, *, feature: str, version: int, store=None):
        from aiflywheel.tasks.assistant.service import load_assistant

        return load_assistant(model_path, feature=feature, version=version, store=store)

    def predict_batch(self, predictor, inputs: list[str], *, recipe) -> list:
        raise ModelError(
            "an assistant answers in conversation, not over files: ask it with "
            "`flywheel ask FEATURE QUESTION` or POST /v1/chat/completions"
        )

    def compress(self, feature: str, version, *, store, settings, recipe, report: Report):
        raise ModelError(
            f"{feature} is an assistant: it has no compressed variants (compress applies to "
            "classifiers)"
        )

    def retrain(self, feature: str, *, store, settings, actor: str, report: Report, recipe=None):
        from aiflywheel.tasks.assistant.retrain import retrain_assistant

        return retrain_assistant(
            feature, store=store, settings=settings, actor=actor, recipe=recipe, report=report
        )

    def drift_reference(
        self, model_path, *, feature: str, store, limit: int, seed: int, with_outputs=True
    ):
        from aiflywheel.tasks.assistant.drift import assistant_drift_reference

        return assistant_drift_reference(model_path, limit=limit, seed=seed)

    def drift_encoder(self, model_path, *, settings):
        from aiflywheel.tasks.assistant.drift import assistant_drift_encoder

        return assistant_drift_encoder(model_path, settings)

    def handoff_questions(self, feature: str, *, store) -> list:
        from aiflywheel.tasks.assistant.drift import handoffs

        return handoffs(feature, store)

    def draft_answer(self, model_path, question: str) -> str | None:
        from aiflywheel.tasks.assistant.drift import closest_passage

        return closest_passage(model_path, question)

    def send_draft(self, feature: str, ref: int, answer: str, *, store, actor: str) -> dict:
        from aiflywheel.tasks.assistant.drift import send_ticket_answer

        return send_ticket_answer(feature, ref, answer, store, actor)


TASK = AssistantTask()
