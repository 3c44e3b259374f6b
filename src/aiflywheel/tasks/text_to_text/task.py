"""text_to_text on the task contract: a text in, a text out (translation, rewriting,
normalization): an LSTM encoder-decoder with attention vs copy and dictionary baselines."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from aiflywheel.core.task import (
    BatchAnswer,
    Built,
    DriftReference,
    FeedbackPayload,
    PredictionPayload,
    Quality,
    Report,
)
from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.errors import ConflictError, DataError, RecipeError


class Transformed(PredictionPayload):
    """A transformed text as the prediction log keeps it: ``label`` is the output (cut to
    80 characters for review lists), ``output`` the whole of it, beam ``alternatives``."""

    output: str = Field(..., description="The target text the model produced.")
    alternatives: list[dict[str, Any]] = Field(
        default_factory=list, description="Other beam outputs with their scores."
    )


class TransformFeedback(FeedbackPayload):
    """A corrected output (the text the model should have produced), a thumb, a comment."""

    misplaced: ClassVar[Mapping[str, str]] = {
        "corrected_label": "this feature transforms text: send corrected_target (the right "
        "output text), not corrected_label",
        "corrected_answer": "this feature transforms text: send corrected_target, not "
        "corrected_answer",
    }

    corrected_target: str | None = Field(
        None, min_length=1, max_length=10_000, description="The output the model should give."
    )

    @field_validator("corrected_target")
    @classmethod
    def _not_blank(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is blank; send the corrected output text")
        return None if value is None else " ".join(value.split())


class TextToTextTask:
    name = "text_to_text"
    summary = "a text in, a text out (translation, rewriting): an LSTM seq2seq vs a dictionary"
    conversational = False
    min_labels = 0
    owns_sections: tuple[str, ...] = ("text_to_text",)
    prediction_payload = Transformed
    feedback_payload = TransformFeedback
    predict_route = "/v1/transform"
    batch_input = "text"

    def chat_handler(self):
        return None  # a text-to-text model answers its predict route, not a chat

    def check_recipe(self, recipe) -> None:
        if recipe.text_to_text is None:
            raise RecipeError(
                "missing required key 'text_to_text': task text_to_text reads its pairs from "
                "text_to_text.source (see `flywheel init --template text-to-text`)"
            )
        if recipe.data is not None:
            raise RecipeError(
                "the data section is for labelled rows; task text_to_text reads text_to_text.source"
            )
        if recipe.text_to_text.model.hidden % 2:
            raise RecipeError(
                f"text_to_text.model.hidden must be even (the encoder runs both ways), got "
                f"{recipe.text_to_text.model.hidden}"
            )

    def train(self, recipe, *, store, settings, report: Report) -> Built:
        from aiflywheel.tasks.text_to_text.train import train_text_to_text_feature

        result = train_text_to_text_feature(recipe, store=store, settings=settings, report=report)
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
        extra = built.details.metrics.get("extra_test")
        if extra:
            console.print(f"second test set: {escape(extra['verdict'])}", highlight=False)
        console.print(
            f"{built.feature} v{built.version} registered as {built.status}; report: "
            f"[bold]{built.report_html}[/bold]"
        )

    def warm_up(self, served) -> None:
        served.classifier.transform(["warm up"], beam_size=1, alternatives=0)

    def api_router(self):
        from aiflywheel.tasks.text_to_text.routes import router

        return router

    def quality(self, metrics: VersionMetrics | Mapping[str, Any]) -> Quality:
        m = VersionMetrics.of(metrics)
        extra = m.extra
        others = {"BLEU": extra["bleu"]} if extra.get("bleu") is not None else {}
        ci = extra.get("chrf_ci")
        return Quality(
            metric="chrF",
            value=extra.get("chrf"),
            ci=tuple(ci) if ci else None,
            baseline_name=m.baseline_name,
            baseline_value=extra.get("baseline_chrf"),
            beats_baseline=m.beats_baseline,
            others=others,
        )

    def load_predictor(self, model_path: str | Path, *, feature: str, version: int, store=None):
        from aiflywheel.recipe import parse_recipe
        from aiflywheel.tasks.text_to_text.config import TextToTextConfig
        from aiflywheel.tasks.text_to_text.model import Seq2SeqTranslator
        from aiflywheel.tasks.text_to_text.predictor import TranslatorPredictor

        model = Seq2SeqTranslator.load(model_path)
        if store is None:
            return TranslatorPredictor(model=model, config=TextToTextConfig(source=str(model_path)))
        row = store.get_model_version(feature, version)
        recipe = parse_recipe(row.recipe, origin=f"recipe of {feature} v{version}")
        return TranslatorPredictor(model=model, config=recipe.text_to_text)

    def predict_batch(self, predictor, inputs: list[str], *, recipe) -> list[BatchAnswer]:
        answers: list[BatchAnswer | None] = [None] * len(inputs)
        good, where = [], []
        for i, text in enumerate(inputs):
            try:
                good.append(predictor.check(text, f"row {i + 1}"))
                where.append(i)
            except DataError as exc:
                answers[i] = BatchAnswer(text, None, str(exc))
        for i, text, result in zip(where, good, predictor.transform(good), strict=True):
            answers[i] = BatchAnswer(text, {"label": result["output"][:80], **result})
        return [a for a in answers if a is not None]

    def compress(self, feature: str, version, *, store, settings, recipe, report: Report):
        from aiflywheel.errors import ModelError

        raise ModelError(
            f"feature {feature!r} is a text_to_text LSTM: it has no compressed variants "
            "(its weights are already small); serve it as trained"
        )

    def drift_reference(
        self, model_path, *, feature: str, store, limit: int, seed: int, with_outputs=True
    ) -> DriftReference:
        from aiflywheel.tasks.text_to_text.data import load_pairs

        splits = Path(model_path).parent / "splits"
        train = [p.source for p in load_pairs(splits / "train.jsonl")]
        test = [p.source for p in load_pairs(splits / "test.jsonl")]
        rng = random.Random(seed)
        sample = rng.sample(train, min(limit, len(train)))
        return DriftReference(
            texts=sample,
            vocabulary_texts=train,
            heldout_texts=rng.sample(test, min(limit, len(test))),
            heldout_outputs=[],  # a translation has no confidence to compare
            source=f"the training and test sources of {splits}",
        )

    def drift_encoder(self, model_path, *, settings):
        return None

    def handoff_questions(self, feature: str, *, store) -> list:
        return []  # every text gets an output; nothing is handed to a person

    def draft_answer(self, model_path, question: str) -> str | None:
        return None

    def send_draft(self, feature: str, ref: int, answer: str, *, store, actor: str) -> dict:
        raise ConflictError(
            f"feature {feature!r} transforms text: it has no knowledge base to send answers to"
        )

    def retrain(self, feature: str, *, store, settings, actor: str, report: Report, recipe=None):
        from aiflywheel.tasks.text_to_text.retrain import retrain_text_to_text

        return retrain_text_to_text(
            feature, store=store, settings=settings, actor=actor, report=report, recipe=recipe
        )


TASK = TextToTextTask()
