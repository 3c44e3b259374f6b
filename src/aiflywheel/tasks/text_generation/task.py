"""Text generation on the task contract: a prompt (or chat turns) in, n responses out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiflywheel.core.task import BatchAnswer, Built, DriftReference, Quality, Report
from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.errors import ConflictError, ModelError, RecipeError
from aiflywheel.tasks.text_generation.payloads import GenerationFeedback, GenerationOutput


class TextGenerationTask:
    name = "text_generation"
    summary = "a prompt in, n responses out (replies, tone): a small LM tuned with LoRA"
    conversational = False  # served like a model version; chats through its own handler
    min_labels = 0
    owns_sections: tuple[str, ...] = ("generation",)
    prediction_payload = GenerationOutput
    feedback_payload = GenerationFeedback
    predict_route = "/v1/completions"
    batch_input = "prompt"

    def chat_handler(self):
        from aiflywheel.tasks.text_generation.routes import chat_completions

        return chat_completions

    def check_recipe(self, recipe) -> None:
        if recipe.generation is None:
            raise RecipeError(
                "missing required key 'generation': task text_generation reads its rows from "
                "generation.source (see `flywheel init --template text-generation`)"
            )
        if recipe.data is not None:
            raise RecipeError(
                "the data section is for classifiers; task text_generation reads generation.source"
            )

    def train(self, recipe, *, store, settings, report: Report) -> Built:
        from aiflywheel.tasks.text_generation.train import train_generation_feature

        result = train_generation_feature(recipe, store=store, settings=settings, report=report)
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
            f"[bold]{built.report_html}[/bold]"
        )

    def api_router(self):
        from aiflywheel.tasks.text_generation.routes import router

        return router

    def quality(self, metrics: VersionMetrics | Mapping[str, Any]) -> Quality:
        m = VersionMetrics.of(metrics)
        extra = m.extra
        ci = extra.get("chrf_ci")
        others = {}
        if extra.get("perplexity") is not None:
            others["perplexity"] = float(extra["perplexity"])
        if extra.get("base_chrf") is not None:
            others["untuned chrF"] = float(extra["base_chrf"])
        return Quality(
            metric="chrF",
            value=extra.get("chrf"),
            ci=tuple(ci) if ci else None,
            baseline_name=m.baseline_name or "nearest-neighbour",
            baseline_value=extra.get("baseline_chrf"),
            beats_baseline=m.beats_baseline,
            others=others,
        )

    def load_predictor(self, model_path: str | Path, *, feature: str, version: int, store=None):
        from aiflywheel.models.causal_lm import TunedLM
        from aiflywheel.recipe import parse_recipe
        from aiflywheel.settings import get_settings
        from aiflywheel.tasks.text_generation.config import GenerationConfig
        from aiflywheel.tasks.text_generation.predictor import GenerationPredictor

        lm = TunedLM.load(Path(model_path), settings=get_settings())
        if store is None:
            return GenerationPredictor(lm, GenerationConfig(source=str(model_path)))
        row = store.get_model_version(feature, version)
        recipe = parse_recipe(row.recipe, origin=f"recipe of {feature} v{version}")
        return GenerationPredictor(lm, recipe.generation)

    def warm_up(self, served) -> None:
        from aiflywheel.models.causal_lm import Example, Sampling

        served.classifier.complete(
            Example(response="", prompt="hello"), n=1, sampling=Sampling(max_new_tokens=1)
        )

    def predict_batch(self, predictor, inputs: list[str], *, recipe) -> list[BatchAnswer]:
        """Each input is a prompt; the answer is one greedy response."""
        from aiflywheel.models.causal_lm import Example, Sampling

        config = predictor.config
        sampling = Sampling(max_new_tokens=min(config.limits.max_tokens, 256))
        out = []
        for prompt in inputs:
            done = predictor.complete(Example(response="", prompt=prompt), n=1, sampling=sampling)
            out.append(BatchAnswer(prompt, {"label": "generated", "candidates": done.texts}))
        return out

    def compress(self, feature: str, version, *, store, settings, recipe, report: Report):
        raise ModelError(
            f"feature {feature!r} is a text generator: flywheel compress has no variants for "
            "it yet (a LoRA version is already only its adapter)"
        )

    def retrain(self, feature: str, *, store, settings, actor: str, report: Report, recipe=None):
        from aiflywheel.tasks.text_generation.retrain import retrain_generation_feature

        return retrain_generation_feature(
            feature, store=store, settings=settings, actor=actor, report=report, recipe=recipe
        )

    def drift_reference(
        self, model_path, *, feature: str, store, limit: int, seed: int, with_outputs=True
    ) -> DriftReference:
        import random

        from aiflywheel.tasks.text_generation.data import read_split

        folder = Path(model_path).parent / "splits"
        train = read_split(folder / "train.jsonl")
        test = read_split(folder / "test.jsonl")
        rng = random.Random(seed)
        sample = rng.sample(train, min(limit, len(train)))
        return DriftReference(
            texts=[r.prompt_text for r in sample],
            vocabulary_texts=[r.prompt_text for r in train],
            heldout_texts=[r.prompt_text for r in test],
            heldout_outputs=[],
            source=f"the training prompts of {folder.parent.name}",
        )

    def drift_encoder(self, model_path, *, settings):
        return None

    def handoff_questions(self, feature: str, *, store) -> list:
        return []

    def draft_answer(self, model_path, question: str) -> str | None:
        return None

    def send_draft(self, feature: str, ref: int, answer: str, *, store, actor: str) -> dict:
        raise ConflictError(
            f"feature {feature!r} generates text: it has no knowledge base to send answers to"
        )


TASK = TextGenerationTask()
