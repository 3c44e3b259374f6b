"""Image classification on the task contract: an image in, one label (and probabilities) out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiflywheel.core.task import BatchAnswer, Built, DriftReference, Quality, Report
from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.errors import ConflictError, RecipeError
from aiflywheel.tasks.text_classification.task import Classification, ClassificationFeedback


class ImageClassification(Classification):
    """A classifier's answer about an image: label, probabilities, the image's sha256."""


class ImageClassificationTask:
    name = "image_classification"
    summary = "an image in, one label out (product photos, defects): a small CNN vs pixels"
    conversational = False
    min_labels = 2
    owns_sections: tuple[str, ...] = ("image", "train.augment")
    prediction_payload = ImageClassification
    feedback_payload = ClassificationFeedback
    predict_route = "/v1/predict"
    batch_input = "path"  # `flywheel predict FEATURE --input images.csv`: a column of paths

    def chat_handler(self):
        return None  # an image classifier answers /v1/predict

    def check_recipe(self, recipe) -> None:
        if recipe.image is None:
            raise RecipeError(
                "missing required key 'image': task image_classification reads its images from "
                "image.source (see `flywheel init --template images`)"
            )
        if recipe.data is not None:
            raise RecipeError(
                "the data section is for text rows; task image_classification reads image.source"
            )

    def train(self, recipe, *, store, settings, report: Report) -> Built:
        from aiflywheel.tasks.image_classification.train import train_image_feature

        result = train_image_feature(recipe, store=store, settings=settings, report=report)
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
            f"{built.feature} v{built.version} registered as {built.status}; report: "
            f"[bold]{built.report_html}[/bold]; data report: {built.run_dir / 'data_report.html'}"
        )
        if built.details.baseline_version is not None:
            number = built.details.baseline_version
            console.print(
                f"{built.feature} v{number} is the pixel baseline, registered because it won; "
                f"serve it with `flywheel promote {built.feature}:{number}`"
            )

    def warm_up(self, served) -> None:
        served.predict_proba(served.classifier.blank())

    def api_router(self):
        from aiflywheel.tasks.image_classification.routes import router

        return router

    def quality(self, metrics: VersionMetrics | Mapping[str, Any]) -> Quality:
        m = VersionMetrics.of(metrics)
        if m.extra.get("is_baseline"):
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
            baseline_name=m.baseline_name or "pixel-logreg",
            baseline_value=m.baseline_macro_f1,
            beats_baseline=m.beats_baseline,
        )

    def load_predictor(self, model_path: str | Path, *, feature: str, version: int, store=None):
        from aiflywheel.recipe import parse_recipe
        from aiflywheel.tasks.image_classification.models import load_image_model
        from aiflywheel.tasks.image_classification.predictor import ImagePredictor

        model = load_image_model(model_path)
        if store is None:  # the manifest's input size; default limits and log settings
            from aiflywheel.tasks.image_classification.config import ImageConfig

            config = ImageConfig(
                source=str(model_path),
                size=getattr(model, "size", 28),
                channels=getattr(model, "channels", 1),
            )
            return ImagePredictor(model=model, config=config)
        row = store.get_model_version(feature, version)
        recipe = parse_recipe(row.recipe, origin=f"recipe of {feature} v{version}")
        return ImagePredictor(model=model, config=recipe.image)

    def compress(self, feature: str, version, *, store, settings, recipe, report: Report):
        from aiflywheel.tasks.image_classification.compress import compress_image_version

        return compress_image_version(
            feature, version, store=store, settings=settings, recipe=recipe, report=report
        )

    def predict_batch(self, predictor, inputs: list[str], *, recipe) -> list[BatchAnswer]:
        """Each input is an image file's path: read, decoded like an upload, classified in
        one call; the output row keeps ``image sha256:<hex>`` (as a hash-only prediction
        log does), never the image. An unreadable or rejected file is that row's error."""
        from aiflywheel.tasks.image_classification.images import ImageRejected, sha256

        answers: list[BatchAnswer | None] = [None] * len(inputs)
        pixels, where, refs = [], [], []
        for i, path in enumerate(inputs):
            try:
                data = Path(path).expanduser().read_bytes()
            except OSError as exc:
                answers[i] = BatchAnswer(path, None, f"cannot read {path!r}: {exc.strerror}")
                continue
            ref = f"image sha256:{sha256(data)}"
            try:
                pixels.append(predictor.decode(data).pixels)
            except ImageRejected as exc:  # names the reason in one line
                answers[i] = BatchAnswer(ref, None, str(exc))
                continue
            where.append(i)
            refs.append(ref)
        if pixels:
            for i, ref, p in zip(where, refs, predictor.predict(pixels), strict=True):
                output = {"label": p.label, "probabilities": p.probabilities}
                answers[i] = BatchAnswer(ref, output | {"image_sha256": ref.split(":")[1]})
        return [a for a in answers if a is not None]

    def drift_reference(
        self, model_path, *, feature: str, store, limit: int, seed: int, with_outputs=True
    ) -> DriftReference:
        # Drift checks compare texts (length, language, vocabulary, embeddings); an image
        # feature has none, so its report lists no checks and says why.
        return DriftReference(
            texts=[],
            vocabulary_texts=[],
            heldout_texts=[],
            heldout_outputs=[],
            source="an image feature: the drift checks cover text inputs only",
        )

    def drift_encoder(self, model_path, *, settings):
        return None

    def handoff_questions(self, feature: str, *, store) -> list:
        return []  # a classifier answers every image; nothing is handed to a person

    def draft_answer(self, model_path, question: str) -> str | None:
        return None

    def send_draft(self, feature: str, ref: int, answer: str, *, store, actor: str) -> dict:
        raise ConflictError(
            f"feature {feature!r} classifies images: it has no knowledge base to send answers to"
        )

    def retrain(self, feature: str, *, store, settings, actor: str, report: Report, recipe=None):
        from aiflywheel.tasks.image_classification.retrain import retrain_image_feature

        return retrain_image_feature(
            feature, store=store, settings=settings, actor=actor, report=report, recipe=recipe
        )


TASK = ImageClassificationTask()
