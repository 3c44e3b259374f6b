"""Train a text_to_text feature: pairs -> splits -> baselines -> LSTM seq2seq -> evaluate
-> register. One run folder (``runs/<feature>/<run id>/``)::

    recipe.yaml  data_report.json  splits/{train,val,test,extra_test}.jsonl
    baseline/dictionary.json  model/{model.safetensors,seq2seq.json}
    metrics.json  report.html

The run is resumable: an interrupted training (Ctrl-C) keeps its ``.partial`` folder with
an epoch checkpoint, and the same command resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aiflywheel.core.runs import CHECKPOINTS, feature_run
from aiflywheel.errors import DataError
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.recipe import Recipe
from aiflywheel.tasks.text_to_text.baselines import CopyBaseline, DictionaryBaseline
from aiflywheel.tasks.text_to_text.config import TextToTextConfig
from aiflywheel.tasks.text_to_text.data import (
    Pair,
    load_pairs,
    read_pairs,
    split_pairs,
    write_pairs,
)
from aiflywheel.tasks.text_to_text.evaluate import score_outputs
from aiflywheel.tasks.text_to_text.model import Seq2SeqTranslator
from aiflywheel.tasks.text_to_text.report_html import write_report
from aiflywheel.tasks.text_to_text.tokens import mode_for

Report = Callable[[str], None]
PARTS = ("train", "val", "test")
MODEL_NAME = "lstm-attention"


@dataclass
class Seq2SeqTrainResult:
    run_id: str
    run_dir: Path
    version: int
    metrics: dict[str, Any]

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"


def modes(config: TextToTextConfig) -> tuple[str, str]:
    return (
        mode_for(config.source_language, config.model.source_tokens),
        mode_for(config.target_language, config.model.target_tokens),
    )


def direction(config: TextToTextConfig) -> str:
    return f"{config.source_language}->{config.target_language}"


def read_splits(folder: Path) -> dict[str, list[Pair]]:
    return {n: load_pairs(Path(folder) / "splits" / f"{n}.jsonl") for n in (*PARTS, "extra_test")}


def prepare_pairs(recipe: Recipe, work_dir: Path, report: Report) -> dict[str, Any]:
    """Read, check and split the recipe's pairs into ``work_dir/splits``; the data report."""
    config = recipe.text_to_text
    pairs = read_pairs(config.source, config, recipe.base_dir)
    parts = split_pairs(
        pairs,
        train=recipe.split.train,
        val=recipe.split.val,
        seed=recipe.seed,
        sample=config.sample,
    )
    extra: list[Pair] = []
    if config.test_source:
        extra = read_pairs(config.test_source, config, recipe.base_dir)
        seen = {p.source for p in parts["train"]}
        extra = [p for p in extra if p.source not in seen]
    for name, rows in {**parts, "extra_test": extra}.items():
        write_pairs(work_dir / "splits" / f"{name}.jsonl", rows)
    report(
        f"{len(pairs):,} pairs read; train {len(parts['train']):,}, val {len(parts['val']):,}, "
        f"test {len(parts['test']):,}" + (f", extra test {len(extra):,}" if extra else "")
    )
    return {
        "source": config.source,
        "test_source": config.test_source,
        "direction": direction(config),
        "pairs": len(pairs),
        "splits": {name: len(rows) for name, rows in parts.items()},
        "extra_test": len(extra),
    }


def work_key(recipe: Recipe, extra: str) -> str:
    blob = json.dumps(recipe.model_dump(mode="json"), sort_keys=True) + extra
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _decode(model: Seq2SeqTranslator, sources: list[str], config: TextToTextConfig) -> list[str]:
    return [
        t.text
        for t in model.translate(
            sources, beam_size=config.beam_size, max_tokens=config.max_output_tokens
        )
    ]


def evaluate_version(
    model: Seq2SeqTranslator,
    dictionary: DictionaryBaseline,
    parts: dict[str, list[Pair]],
    recipe: Recipe,
) -> dict[str, Any]:
    config = recipe.text_to_text
    out: dict[str, Any] = {}
    for name in ("test", "extra_test"):
        pairs = parts.get(name) or []
        if not pairs:
            continue
        sources = [p.source for p in pairs]
        outputs = {
            MODEL_NAME: _decode(model, sources, config),
            "copy": CopyBaseline().predict(sources),
            "dictionary": dictionary.predict(sources),
        }
        out[name] = score_outputs(
            outputs,
            pairs,
            target_language=config.target_language,
            resamples=recipe.evaluate.bootstrap_resamples,
            seed=recipe.seed,
            model_name=MODEL_NAME,
        )
    return out


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    test = metrics["test"]
    model = test["systems"][MODEL_NAME]
    best = test["best_baseline"]
    summary = {
        "chrf": model["chrF"]["score"],
        "chrf_ci": model["chrF"]["ci"],
        "bleu": model["BLEU"]["score"],
        "bleu_ci": model["BLEU"]["ci"],
        "baseline_name": best,
        "baseline_chrf": test["systems"][best]["chrF"]["score"],
        "beats_baseline": test["beats_baseline"],
        "gain_ci": test["comparison"]["ci"],
        "test_rows": test["rows"],
        "train_seconds": metrics["train_seconds"],
        "direction": metrics["direction"],
        "verdict": test["verdict"],
    }
    extra = metrics.get("extra_test")
    if extra:
        summary["extra_test_chrf"] = extra["systems"][MODEL_NAME]["chrF"]["score"]
        summary["extra_test_verdict"] = extra["verdict"]
    return summary


def train_text_to_text_feature(
    recipe: Recipe,
    *,
    store,
    settings,
    report: Report = lambda _: None,
    prepare: Callable[[Path], dict[str, Any]] | None = None,
    kind: str = "train",
    key_extra: str = "",
) -> Seq2SeqTrainResult:
    """Train, evaluate and register a candidate version (see module doc)."""
    import torch

    config = recipe.text_to_text
    store.upsert_feature(
        recipe.feature, recipe.task, recipe.description, recipe.model_dump(mode="json")
    )
    with feature_run(
        store,
        settings.runs_dir,
        recipe.feature,
        kind,
        work_name=f".{kind}-{work_key(recipe, key_extra)}",
        resumable=True,
    ) as run:
        work_dir, final_dir = run.work_dir, run.final_dir
        write_text_atomic(
            work_dir / "recipe.yaml",
            yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False),
        )
        report("reading pairs")
        data_report = (prepare or (lambda d: prepare_pairs(recipe, d, report)))(work_dir)
        write_json_atomic(work_dir / "data_report.json", data_report)
        parts = read_splits(work_dir)
        everything = [p for n in PARTS for p in parts[n]]
        if not parts["val"]:
            report("no validation split: the best epoch is chosen on the training loss")
        blob = json.dumps([p.to_json() for p in everything], ensure_ascii=False).encode()
        split_blob = json.dumps({n: len(parts[n]) for n in PARTS}).encode()
        version = store.record_dataset_version(
            recipe.feature,
            content_hash=hashlib.sha256(blob).hexdigest(),
            split_version=hashlib.sha256(blob + split_blob).hexdigest()[:16],
            rows=len(everything),
            labels={direction(config): len(everything)},
            source=str(data_report.get("source", config.source)),
            path=str(final_dir / "splits"),
        )
        source_mode, target_mode = modes(config)
        train = parts["train"]
        dictionary = DictionaryBaseline(source_mode=source_mode, target_mode=target_mode).fit(
            [p.source for p in train], [p.target for p in train]
        )
        dictionary.save(work_dir / "baseline")
        previous = torch.get_num_threads()
        if config.threads:
            torch.set_num_threads(config.threads)
        try:
            spec = config.model
            model = Seq2SeqTranslator(
                source_mode=source_mode,
                target_mode=target_mode,
                embedding=spec.embedding,
                hidden=spec.hidden,
                layers=spec.layers,
                dropout=spec.dropout,
                max_vocab=spec.max_vocab,
            )
            report(
                f"training the LSTM encoder-decoder ({source_mode} -> {target_mode} tokens, "
                f"hidden {spec.hidden}) on {len(train):,} pairs"
            )
            started = time.perf_counter()
            model.fit(
                [p.source for p in train],
                [p.target for p in train],
                val_sources=[p.source for p in parts["val"]],
                val_targets=[p.target for p in parts["val"]],
                epochs=config.epochs,
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                time_budget_s=config.time_budget_s,
                patience=config.patience,
                seed=recipe.seed,
                checkpoint_dir=work_dir / CHECKPOINTS,
                report=report,
            )
            seconds = time.perf_counter() - started
            model.save(work_dir / "model")
            model = Seq2SeqTranslator.load(work_dir / "model")  # evaluate what will serve
            report(f"evaluating on {len(parts['test']):,} test pairs")
            metrics = evaluate_version(model, dictionary, parts, recipe)
        finally:
            torch.set_num_threads(previous)
        if not metrics.get("test"):
            raise DataError("the test split is empty; set split.test above 0")
        metrics.update(
            {
                "direction": direction(config),
                "model": MODEL_NAME,
                "train_seconds": round(seconds, 2),
                "train_rows": len(train),
                "epochs": model.history,
                "dataset_version": version.content_hash,
                "tokens": {"source": source_mode, "target": target_mode},
                "vocabulary": {
                    "source": len(model.source_vocab or []),
                    "target": len(model.target_vocab or []),
                },
            }
        )
        metrics["verdict"] = metrics["test"]["verdict"]
        write_json_atomic(work_dir / "metrics.json", metrics)
        write_report(metrics, work_dir / "report.html", title=f"{recipe.feature}: text to text")
        run.commit()
        registered = store.register_model_version(
            recipe.feature,
            run_id=run.run_id,
            dataset_version_id=version.id,
            model_path=str(final_dir / "model"),
            base_model=MODEL_NAME,
            method=kind,
            metrics=summarize(metrics),
            recipe=recipe.model_dump(mode="json"),
        ).version
        run.succeed(
            summary={"version": registered, **summarize(metrics)}, dataset_version_id=version.id
        )
    return Seq2SeqTrainResult(run.run_id, final_dir, registered, metrics)
