"""Train a text generation feature: rows -> splits -> nearest-neighbour baseline -> LoRA or
full fine-tuning of the base model -> evaluation against the untuned base and the
baseline -> a registered candidate.

``train_generation_feature(recipe, ...)`` works in one run folder::

    recipe.yaml data_report.json splits/{train,val,test}.jsonl   the frozen rows
    baseline/nearest_neighbour.json                             the NN baseline
    model/   (causal_lm.json + adapter/ or weights/ + tokenizer/) the tuned model
    train_log.json metrics.json report.html                     what happened, figures

The work folder has a stable name per recipe (``.train-<hash>.partial``): Ctrl-C saves a
checkpoint and the same command resumes from it. Retraining passes its own ``prepare``
(the champion's splits + feedback rows) and ``tune`` (SFT on edits, DPO on choices).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aiflywheel.core.runs import CHECKPOINTS, feature_run
from aiflywheel.errors import DataError
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.models.causal_lm import (
    LoraSettings,
    TrainSettings,
    TunedLM,
    check_chat,
    fine_tune,
    has_chat_template,
    load_causal_lm,
)
from aiflywheel.models.generator_catalog import GENERATOR_CATALOG
from aiflywheel.recipe import Recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.text_generation.baseline import NearestResponse
from aiflywheel.tasks.text_generation.config import GenerationConfig
from aiflywheel.tasks.text_generation.data import (
    PARTS,
    Row,
    check_lengths,
    demo_path,
    read_rows,
    read_split,
    redact_rows,
    split_rows,
    write_rows,
)
from aiflywheel.tasks.text_generation.evaluate import evaluate_generator, summarize
from aiflywheel.tasks.text_generation.report_html import write_report

Report = Callable[[str], None]
# (base model, its tokenizer, chat?, splits, work dir, report) -> the tuned model and its log
Tune = Callable[[Any, Any, bool, dict[str, list[Row]], Path, Report], tuple[TunedLM, dict]]


@dataclass
class GenerationTrainResult:
    run_id: str
    run_dir: Path
    version: int
    metrics: dict[str, Any]

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"


def base_model_name(recipe: Recipe) -> str:
    """The recipe's model as stored in the version: an alias as is, a path made absolute."""
    name = recipe.generation.model
    if name in GENERATOR_CATALOG:
        return name
    path = (recipe.base_dir / name).expanduser()
    return str(path.resolve()) if path.exists() else name


def chat_format(config: GenerationConfig, tokenizer: Any, model_name: str) -> bool:
    """Whether rows go through the chat template (an error when asked of one without)."""
    if config.prompt_format == "plain":
        return False
    if config.prompt_format == "chat":
        check_chat(tokenizer, True, model_name)
        return True
    return has_chat_template(tokenizer)


def train_settings(recipe: Recipe) -> TrainSettings:
    config = recipe.generation
    budget = config.time_budget
    if budget == "auto":
        budget = recipe.train.time_budget_minutes * 60
    return TrainSettings(
        method=config.method,
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        max_length=config.max_length,
        packing=config.packing,
        buckets=config.length_buckets,
        time_budget_s=budget,
        seed=recipe.seed,
        lora=LoraSettings(config.lora.r, config.lora.alpha, config.lora.dropout),
    )


def data_stage(recipe: Recipe, report: Report) -> Callable[[Path], dict[str, Any]]:
    config = recipe.generation

    def prepare(work_dir: Path) -> dict[str, Any]:
        write_text_atomic(
            work_dir / "recipe.yaml",
            yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False),
        )
        source = demo_path(config.source) or (recipe.base_dir / config.source).expanduser()
        rows, counts = read_rows(source, config)
        rows, counts["rows_with_pii"] = redact_rows(rows, recipe.pii.mode, recipe.pii.types)
        parts = split_rows(rows, val=recipe.split.val, test=recipe.split.test, seed=recipe.seed)
        for name in PARTS:
            write_rows(work_dir / "splits" / f"{name}.jsonl", parts[name])
        data_report = {
            "source": str(source),
            **counts,
            "splits": {name: len(parts[name]) for name in PARTS},
        }
        write_json_atomic(work_dir / "data_report.json", data_report)
        report(
            f"{counts['rows']:,} {counts['kind']} rows ({counts['duplicates_dropped']} duplicates "
            f"dropped): " + ", ".join(f"{n} {len(parts[n])}" for n in PARTS)
        )
        return data_report

    return prepare


def sft_tune(recipe: Recipe) -> Tune:
    """The first training of a feature: SFT on the training rows."""

    def tune(model, tokenizer, chat, parts, work_dir, report):
        model, log = fine_tune(
            model,
            tokenizer,
            [r.example for r in parts["train"]],
            chat=chat,
            settings=train_settings(recipe),
            checkpoint_dir=work_dir / CHECKPOINTS / "sft",
            report=report,
        )
        tuned = TunedLM(
            model,
            tokenizer,
            base=base_model_name(recipe),
            method=recipe.generation.method,
            chat=chat,
            max_length=recipe.generation.max_length,
        )
        return tuned, {"sft": log.to_json()}

    return tune


def work_key(recipe: Recipe, extra: str = "") -> str:
    blob = json.dumps(recipe.model_dump(mode="json"), sort_keys=True) + extra
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def train_generation_feature(
    recipe: Recipe,
    *,
    store: Store,
    settings: Settings,
    report: Report = lambda _: None,
    prepare: Callable[[Path], dict[str, Any]] | None = None,
    tune: Tune | None = None,
    kind: str = "train",
    key_extra: str = "",
) -> GenerationTrainResult:
    """Train, evaluate and register a candidate version (see the module doc)."""
    import torch

    config = recipe.generation
    store.upsert_feature(
        recipe.feature, recipe.task, recipe.description, recipe.model_dump(mode="json")
    )
    previous = torch.get_num_threads()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    try:
        with feature_run(
            store,
            settings.runs_dir,
            recipe.feature,
            kind,
            work_name=f".{kind}-{work_key(recipe, key_extra)}",
            resumable=True,
        ) as run:
            work_dir, final_dir = run.work_dir, run.final_dir
            data_report = (prepare or data_stage(recipe, report))(work_dir)
            parts = {n: read_split(work_dir / "splits" / f"{n}.jsonl") for n in PARTS}
            if not parts["test"]:
                raise DataError("the test split is empty; set split.test above 0 (e.g. 0.1)")
            everything = [r for n in PARTS for r in parts[n]]
            content = hashlib.sha256("".join(sorted(r.id for r in everything)).encode()).hexdigest()
            split_hash = hashlib.sha256(
                json.dumps({n: [r.id for r in parts[n]] for n in PARTS}).encode()
            ).hexdigest()[:16]
            version = store.record_dataset_version(
                recipe.feature,
                content_hash=content,
                split_version=split_hash,
                rows=len(everything),
                labels=dict(Counter(r.language for r in everything)),
                source=data_report["source"],
                path=str(final_dir / "splits"),
            )
            base_name = base_model_name(recipe)
            report(f"loading {base_name}")
            model, tokenizer, how = load_causal_lm(base_name, settings)
            chat = chat_format(config, tokenizer, config.model)
            check_lengths(everything, tokenizer, chat=chat, max_length=config.max_length)
            baseline = NearestResponse().fit(
                [r.prompt_text for r in parts["train"]],
                [r.example.response for r in parts["train"]],
            )
            baseline.save(work_dir / "baseline")
            report(f"tuning {base_name} ({config.method}, {'chat' if chat else 'plain'} prompts)")
            tuned, logs = (tune or sft_tune(recipe))(
                model, tokenizer, chat, parts, work_dir, report
            )
            tuned.save(work_dir / "model")
            write_json_atomic(work_dir / "train_log.json", {"loaded_from": how, **logs})
            served = TunedLM.load(work_dir / "model", settings=settings)  # what will serve
            untuned_model, untuned_tokenizer, _ = load_causal_lm(base_name, settings)
            untuned = TunedLM(
                untuned_model.eval(),
                untuned_tokenizer,
                base=base_name,
                chat=chat,
                max_length=config.max_length,
            )
            report(f"evaluating on {len(parts['test'])} held-out rows against both baselines")
            metrics = evaluate_generator(
                served,
                untuned,
                baseline,
                parts["test"],
                config,
                resamples=recipe.evaluate.bootstrap_resamples,
                seed=recipe.seed,
            )
            metrics["train"] = logs
            metrics["train_rows"] = len(parts["train"])
            metrics["base_model"] = base_name
            metrics["method"] = tuned.method
            metrics["prompt_format"] = "chat" if chat else "plain"
            metrics["dataset_version"] = version.content_hash
            write_json_atomic(work_dir / "metrics.json", metrics)
            write_report(metrics, work_dir / "report.html", title=f"{recipe.feature}: generator")
            run.commit()
            figures = {**summarize(metrics), "train": logs}
            model_version = store.register_model_version(
                recipe.feature,
                run_id=run.run_id,
                dataset_version_id=version.id,
                model_path=str(final_dir / "model"),
                base_model=base_name,
                method=tuned.method,
                metrics=figures,
                recipe=recipe.model_dump(mode="json"),
            ).version
            run.succeed(
                summary={"version": model_version, **summarize(metrics)},
                dataset_version_id=version.id,
            )
    finally:
        torch.set_num_threads(previous)
    report(metrics["verdict"])
    return GenerationTrainResult(run.run_id, final_dir, model_version, metrics)
