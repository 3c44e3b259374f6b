"""Text classification on the task contract: labels in, one label (and probabilities) out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from aiflywheel.core.task import (
    BatchAnswer,
    Built,
    FeedbackPayload,
    PredictionPayload,
    Quality,
    Report,
)
from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.errors import ConflictError, RecipeError


class Classification(PredictionPayload):
    """A classifier's answer: the label and the probability of every label."""

    probabilities: dict[str, float] = Field(default_factory=dict)


class ClassificationFeedback(FeedbackPayload):
    """A correction of a classification (one of the feature's labels), a thumb, a comment."""

    misplaced: ClassVar[Mapping[str, str]] = {
        "corrected_answer": "this feature is a classifier: send corrected_label, not "
        "corrected_answer"
    }

    corrected_label: str | None = Field(
        None, min_length=1, max_length=200, description="The right label, one of the feature's."
    )

    @field_validator("corrected_label")
    @classmethod
    def _a_known_label(cls, label: str | None, info: ValidationInfo) -> str | None:
        prediction = (info.context or {}).get("prediction")
        known = list(getattr(prediction, "probabilities", None) or {})
        if label is not None and known and label not in known:
            feature = (info.context or {}).get("feature")
            of = f" of feature {feature!r}" if feature else ""
            raise ValueError(f"not a label{of} (labels: {', '.join(known)})")
        return label


class TextClassificationTask:
    name = "text_classification"
    summary = "a text in, one label out (reviews, tickets, news): fine-tuned encoders vs TF-IDF"
    conversational = False
    min_labels = 2
    owns_sections: tuple[str, ...] = ("train.pretrain",)
    prediction_payload = Classification
    feedback_payload = ClassificationFeedback
    batch_input = "text"
    predict_route = "/v1/classify"

    def chat_handler(self):
        return None  # a classifier answers /v1/classify

    def check_recipe(self, recipe) -> None:
        if recipe.data is None:
            raise RecipeError(
                "missing required key 'data': task text_classification reads its rows from "
                "data.source"
            )
        if recipe.data.columns.label is None:
            raise RecipeError(
                "data.columns.label is null, but task text_classification needs a label column"
            )

    def train(self, recipe, *, store, settings, report: Report) -> Built:
        from aiflywheel.tasks.text_classification.train import train_feature

        result = train_feature(recipe, store=store, settings=settings, report=report)
        return Built(
            feature=recipe.feature,
            run_id=result.run_id,
            run_dir=result.run_dir,
            version=result.version,
            status="candidate",
            headline=result.metrics["verdict"],
            report_html=result.report_html,
            details=result,
        )

    def show_built(self, built: Built) -> None:
        from rich.markup import escape

        from aiflywheel.cli import console

        console.print(f"\n[bold]{escape(built.headline)}[/bold]", highlight=False)
        console.print(
            f"{built.feature} v{built.version} registered as {built.status} "
            f"({built.details.method}); report: [bold]{built.report_html}[/bold]"
        )
        if built.details.baseline_version is not None:
            number = built.details.baseline_version
            console.print(
                f"{built.feature} v{number} is the TF-IDF baseline, registered because it "
                f"won; serve it with `flywheel promote {built.feature}:{number}`"
            )

    def warm_up(self, served) -> None:
        served.predict_proba([served.prepare("warm up")])

    def api_router(self):
        return None  # /v1/classify and /v1/feedback are the server's own routes

    def quality(self, metrics: VersionMetrics | Mapping[str, Any]) -> Quality:
        m = VersionMetrics.of(metrics)
        if m.extra.get("is_baseline"):  # the TF-IDF baseline, registered because it won
            return Quality(
                metric="macro-F1",
                value=m.macro_f1,
                ci=m.macro_f1_ci,
                baseline_name=m.extra.get("compared_with"),
                baseline_value=m.extra.get("compared_macro_f1"),
                beats_baseline=True,
            )
        return Quality(
            metric="macro-F1",
            value=m.macro_f1,
            ci=m.macro_f1_ci,
            baseline_name=m.baseline_name or "tfidf",
            baseline_value=m.baseline_macro_f1,
            beats_baseline=m.beats_baseline,
        )

    def load_predictor(self, model_path: str | Path, *, feature: str, version: int, store=None):
        from aiflywheel.tasks.text_classification.models.base import load_classifier

        return load_classifier(model_path)

    def predict_batch(self, predictor, inputs: list[str], *, recipe) -> list[BatchAnswer]:
        """Each text as ``/v1/classify`` sees and logs it (the recipe's cleaning and PII
        redaction, ``training_view``), then classified in one call."""
        from aiflywheel.data.clean import training_view
        from aiflywheel.recipe import CleanConfig, PiiConfig

        clean = CleanConfig.model_validate(recipe.get("clean") or {})
        pii = PiiConfig.model_validate(recipe.get("pii") or {})
        prepared = [training_view(text, clean, pii) for text in inputs]
        kept = [i for i, text in enumerate(prepared) if text.strip()]
        predictions = predictor.predict([prepared[i] for i in kept]) if kept else []
        answers = {i: p.to_json() for i, p in zip(kept, predictions, strict=True)}
        return [
            BatchAnswer(text, answers[i])
            if i in answers
            else BatchAnswer(text, None, "empty after cleaning (the recipe's clean settings)")
            for i, text in enumerate(prepared)
        ]

    def compress(self, feature: str, version, *, store, settings, recipe, report: Report):
        from aiflywheel.compress import compress_version

        return compress_version(
            feature, version, store=store, settings=settings, recipe=recipe, report=report
        )

    def retrain(self, feature: str, *, store, settings, actor: str, report: Report, recipe=None):
        from aiflywheel.tasks.text_classification.retrain import retrain_feature

        return retrain_feature(
            feature, store=store, settings=settings, actor=actor, report=report, recipe=recipe
        )

    def drift_reference(
        self, model_path, *, feature: str, store, limit: int, seed: int, with_outputs=True
    ):
        from aiflywheel.tasks.text_classification.drift import classifier_drift_reference

        return classifier_drift_reference(
            model_path, limit=limit, seed=seed, with_outputs=with_outputs
        )

    def drift_encoder(self, model_path, *, settings):
        return None  # a TF-IDF projection of the texts: no pooled encoder is kept apart

    def handoff_questions(self, feature: str, *, store) -> list:
        return []  # a classifier answers every text; nothing is handed to a person

    def draft_answer(self, model_path, question: str) -> str | None:
        return None

    def send_draft(self, feature: str, ref: int, answer: str, *, store, actor: str) -> dict:
        raise ConflictError(
            f"feature {feature!r} is a classifier: it has no knowledge base to send answers to"
        )


TASK = TextClassificationTask()
