"""The customer-service assistant on the task contract: a question in, an answer, its
citations or an honest handoff out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiflywheel.core.task import Built, Quality, Report
from aiflywheel.errors import RecipeError


class AssistantTask:
    name = "assistant"
    summary = "questions in, cited answers or honest handoffs out, over a help center"
    conversational = True
    min_labels = 0
    owns_sections: tuple[str, ...] = ("assistant",)

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

    def api_router(self):
        from aiflywheel.tasks.assistant.routes import router

        return router

    def quality(self, metrics: Mapping[str, Any]) -> Quality:
        if "hit@5" not in metrics:
            return Quality(metric="answer accuracy", value=None)
        ci = metrics.get("answer_accuracy_ci")
        return Quality(
            metric="answer accuracy",
            value=metrics.get("answer_accuracy"),
            ci=(float(ci[0]), float(ci[1])) if ci else None,
            others={
                "hit@5": metrics["hit@5"],
                "handoff P": metrics["handoff_precision"],
                "handoff R": metrics["handoff_recall"],
            },
        )

    def load_predictor(self, model_path: str | Path, *, feature: str, version: int, store=None):
        from aiflywheel.tasks.assistant.service import load_assistant

        return load_assistant(model_path, feature=feature, version=version, store=store)

    def retrain(self, feature: str, *, store, settings, actor: str, report: Report, recipe=None):
        from aiflywheel.tasks.assistant.retrain import retrain_assistant

        return retrain_assistant(
            feature, store=store, settings=settings, actor=actor, recipe=recipe, report=report
        )

    def feedback_problem(
        self, payload: Mapping[str, Any], known_labels: Sequence[str]
    ) -> str | None:
        if payload.get("corrected_label") is not None:
            return "this feature is an assistant: send corrected_answer, not corrected_label"
        return None


TASK = AssistantTask()
