"""Build an assistant version from a recipe (``flywheel train`` on task ``assistant``).

``build_assistant(recipe, store, settings)``:

1. loads the knowledge base (problems such as duplicate FAQ questions with different
   answers go into the report and the metrics);
2. embeds and indexes it (``KnowledgeIndex``), reusing the embeddings of the champion's
   index for chunks that did not change, and keeps the entries added live (``flywheel
   kb add``, the API) that the store holds;
3. trains the answerability judge when the recipe asks for one (``assistant.judge``,
   saved in ``assistant/judge/``);
4. calibrates the handoff and FAQ thresholds on the calibration half of the evaluation
   set (unless the recipe sets both) and evaluates on all of it (retrieval BM25 / dense /
   hybrid, answers, handoffs, latency);
5. writes ``runs/<feature>/<run id>/``: ``assistant/`` (``assistant.json`` + ``index/``),
   ``metrics.json``, ``evaluation.jsonl`` (one row per question) and ``report.html``;
6. registers the folder as a new candidate version (the first version becomes champion,
   as nothing else can answer yet).
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiflywheel.core.runs import feature_run
from aiflywheel.errors import DataError, ModelError, NotFoundError
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.recipe import Recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.assistant.config import AssistantConfig
from aiflywheel.tasks.assistant.types import Chunk

Report = Callable[[str], None]
# (work folder, the built Assistant, its metrics) -> figures to store with the version
BeforeCommit = Callable[[Path, Any, dict[str, Any]], dict[str, Any] | None]

DEMO_KNOWLEDGE_BASE = "demo:help-center"
DEMO_EVAL_SET = "demo:help-center-eval"
MANIFEST = "assistant.json"
MAX_PROBLEM_LINES = 10


def help_center_dir() -> Path:
    """The shipped demo help center (package data)."""
    return Path(str(importlib.resources.files("aiflywheel.tasks.assistant") / "help_center"))


def resolve_knowledge_base(value: str, base_dir: Path) -> Path:
    if value == DEMO_KNOWLEDGE_BASE:
        return help_center_dir()
    path = Path(value)
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        raise DataError(f"assistant.knowledge_base {value!r}: {path} does not exist")
    return path


def resolve_eval_set(value: str, base_dir: Path) -> Path:
    if value == DEMO_EVAL_SET:
        return help_center_dir() / "eval.jsonl"
    path = Path(value)
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise DataError(f"assistant.eval_set {value!r}: {path} is not a file")
    return path


@dataclass
class BuildResult:
    run_id: str
    run_dir: Path
    version: int
    status: str
    metrics: dict[str, Any]

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"


def assistant_method(config: AssistantConfig) -> str:
    return f"{config.mode}+{config.generator.kind}"


def build_assistant(
    recipe: Recipe,
    *,
    store: Store,
    settings: Settings,
    report: Report = lambda _: None,
    kind: str = "train",
    knowledge_base: Path | None = None,
    eval_set: Path | None = None,
    extra_chunks: Sequence[Chunk] = (),
    before_commit: BeforeCommit | None = None,
) -> BuildResult:
    """Build, evaluate and register a version (see the module doc).

    ``flywheel retrain`` passes the rest: ``knowledge_base`` and ``eval_set`` (resolved
    paths, instead of the recipe's), ``extra_chunks`` (accepted answers as FAQ entries,
    kept in the index next to the live entries) and ``before_commit``, called with the
    work folder, the built assistant and the metrics before the folder is committed; the
    figures it returns are stored with the version.
    """
    from aiflywheel.tasks.assistant.encoders import encoder_from_name
    from aiflywheel.tasks.assistant.evaluation import (
        calibrate_thresholds,
        evaluate_assistant,
        load_eval_set,
        split_eval_set,
    )
    from aiflywheel.tasks.assistant.knowledge_base import load_knowledge_base
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
    from aiflywheel.tasks.assistant.policy import Thresholds
    from aiflywheel.tasks.assistant.report_html import write_assistant_report
    from aiflywheel.tasks.assistant.service import (
        assistant_from_parts,
        live_entry_chunks,
        put_live_chunks,
    )

    config = recipe.assistant
    if config is None:
        raise ModelError(f"recipe for {recipe.feature!r} has no assistant section")
    store.upsert_feature(
        recipe.feature, recipe.task, recipe.description, recipe.model_dump(mode="json")
    )
    with feature_run(store, settings.runs_dir, recipe.feature, kind) as run:
        run_id, work_dir, final_dir = run.run_id, run.work_dir, run.final_dir
        started = time.perf_counter()
        kb_path = knowledge_base or resolve_knowledge_base(config.knowledge_base, recipe.base_dir)
        kb = load_knowledge_base(
            kb_path, max_chars=config.chunk_chars, overlap=config.chunk_overlap
        )
        report(f"knowledge base {kb_path}: {kb.report.summary()}")
        for problem in kb.report.problems[:MAX_PROBLEM_LINES]:
            report(f"problem: {problem}")
        if len(kb.report.problems) > MAX_PROBLEM_LINES:
            more = len(kb.report.problems) - MAX_PROBLEM_LINES
            report(f"... and {more} more problem(s); metrics.json lists them all")
        if not kb.chunks:
            raise DataError(f"knowledge base {kb_path} has no FAQ entries or document text")
        encoder = encoder_from_name(config.encoder, settings)
        index_dir = work_dir / "assistant" / "index"
        champion = store.champion(recipe.feature)
        previous = Path(champion.model_path) / "index" if champion is not None else None
        live = live_entry_chunks(store, recipe.feature)
        if previous is not None and previous.is_dir():
            shutil.copytree(previous, index_dir)
            index = KnowledgeIndex.load(index_dir, encoder, fusion=config.fusion_settings())
            update = index.update(kb, keep_runtime=True)
            report(f"index updated from v{champion.version}: {update.summary()}")
            # entries added live that the store no longer holds (replaced by a correction),
            # and accepted answers this build does not learn
            keep = {c.id for c in live} | {c.id for c in extra_chunks}
            stale = [c.id for c in index.chunks if c.id in index.runtime_ids - keep]
            if stale:
                index.remove_chunks(stale)
        else:
            report(f"embedding {len(kb.chunks)} chunks with {config.encoder}")
            index = KnowledgeIndex.build(kb, encoder, index_dir, fusion=config.fusion_settings())
        if live:
            put_live_chunks(index, live)
            report(f"{len(live)} entries added live (flywheel kb add) kept in the index")
        if extra_chunks:
            have = {c.id for c in index.chunks}
            index.add_chunks([c for c in extra_chunks if c.id not in have])
            report(f"{len(extra_chunks)} accepted answers added as FAQ entries")

        judge_summary = None
        if config.judge.kind != "none":
            judge_summary = train_judge(index, config, work_dir / "assistant", report)

        questions = []
        eval_path = None
        if eval_set is not None:
            eval_path = eval_set
            questions = load_eval_set(eval_path)
        elif config.eval_set is not None:
            eval_path = resolve_eval_set(config.eval_set, recipe.base_dir)
            questions = load_eval_set(eval_path)
        set_in_recipe = config.handoff_below is not None and config.faq_at_least is not None
        provisional = Thresholds(
            handoff_below=config.handoff_below or 0.0,
            faq_at_least=config.faq_at_least if config.faq_at_least is not None else 1.01,
            origin="recipe",
        )
        assistant = assistant_from_parts(index, config, provisional, settings)
        if judge_summary is not None:
            assistant.judge = judge_summary.pop("judge")
            assistant.judge_role = config.judge.role
        calibration = None
        if not set_in_recipe:
            calibration_set, _ = split_eval_set(questions, config.held_out_share)
            calibration = calibrate_thresholds(
                assistant,
                calibration_set,
                target_recall=config.handoff_target_recall,
                faq_precision=config.faq_target_precision,
            )
            thresholds = Thresholds(
                handoff_below=(
                    config.handoff_below
                    if config.handoff_below is not None
                    else calibration.thresholds.handoff_below
                ),
                faq_at_least=(
                    config.faq_at_least
                    if config.faq_at_least is not None
                    else calibration.thresholds.faq_at_least
                ),
                origin=calibration.thresholds.origin,
                answer_judge_at_least=calibration.thresholds.answer_judge_at_least,
            )
            assistant.thresholds = thresholds
            report(
                f"thresholds {thresholds.origin}: hand off below {thresholds.handoff_below:.3f}, "
                f"FAQ answer at {thresholds.faq_at_least:.3f}"
            )
        evaluation = None
        if questions:
            report(f"evaluating on {len(questions)} questions ({config.generator.kind} generator)")
            evaluation = evaluate_assistant(
                assistant, questions, held_out_share=config.held_out_share
            )
        metrics = {
            "feature": recipe.feature,
            "task": "assistant",
            "method": assistant_method(config),
            "encoder": config.encoder,
            "generator": config.generator.model_dump(mode="json"),
            "knowledge_base": {
                "path": str(kb_path),
                "chunks": len(index),
                "faq_entries": sum(c.kind == "faq" for c in index.chunks),
                "document_chunks": sum(c.kind == "doc" for c in index.chunks),
                "learned_entries": len(extra_chunks),
                "problems": [str(p) for p in kb.report.problems],
                "summary": kb.report.summary(),
            },
            "thresholds": assistant.thresholds.to_json(),
            "calibration": calibration.to_json() if calibration else None,
            "judge": judge_summary,
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        if evaluation is not None:
            rows = evaluation.pop("rows")
            metrics["evaluation"] = evaluation
            write_text_atomic(
                work_dir / "evaluation.jsonl",
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
            )
        manifest = {
            "kind": "assistant",
            "feature": recipe.feature,
            "encoder": config.encoder,
            "config": config.model_dump(mode="json"),
            "thresholds": assistant.thresholds.to_json(),
            "judge": judge_summary,
            "knowledge_base": str(kb_path),
            "eval_set": str(eval_path) if eval_path is not None else None,
        }
        write_json_atomic(work_dir / "assistant" / MANIFEST, manifest)
        write_json_atomic(work_dir / "metrics.json", metrics)
        write_assistant_report(metrics, work_dir / "evaluation.jsonl", work_dir / "report.html")
        summary = assistant_summary(metrics)
        if before_commit is not None:
            summary.update(before_commit(work_dir, assistant, metrics) or {})
        run.commit()
        registered = store.register_model_version(
            recipe.feature,
            run_id=run_id,
            dataset_version_id=None,
            model_path=str(final_dir / "assistant"),
            base_model=config.encoder,
            method=assistant_method(config),
            metrics=summary,
            recipe=recipe.model_dump(mode="json"),
        )
        status = registered.status
        if champion is None:
            store.change_champion(
                recipe.feature,
                registered.version,
                action="promote",
                actor="flywheel train",
                reason="the first version of an assistant becomes champion",
            )
            status = "champion"
        run.succeed(summary={"version": registered.version, **summary})
    return BuildResult(run_id, final_dir, registered.version, status, metrics)


def train_judge(
    index: Any, config: AssistantConfig, assistant_dir: Path, report: Report
) -> dict[str, Any]:
    """Build the judge's training pairs from ``index`` (its knowledge base, the entries
    added live and the accepted answers a retrain added), train the judge and save it in
    ``assistant_dir/judge``. Returns its summary, with the trained judge under ``judge``."""
    from aiflywheel.tasks.assistant.judge import FeatureJudge
    from aiflywheel.tasks.assistant.judge_pairs import build_judge_pairs, pair_counts
    from aiflywheel.tasks.assistant.service import JUDGE_DIR

    started = time.perf_counter()
    pairs = build_judge_pairs(index, max_questions=config.judge.max_questions)
    judge = FeatureJudge(index, l2=config.judge.l2, reorder=config.judge.reorder).fit(pairs)
    judge.save(assistant_dir / JUDGE_DIR)
    seconds = round(time.perf_counter() - started, 2)
    counts = pair_counts(pairs)
    report(
        f"judge ({config.judge.kind}) trained on {len(pairs)} questions "
        f"({judge.summary['rows']} hits, {judge.summary['answering_rows']} answering) "
        f"in {seconds:.1f} s"
    )
    return {
        "kind": config.judge.kind,
        "questions": len(pairs),
        "pairs": counts,
        "rows": judge.summary["rows"],
        "answering_rows": judge.summary["answering_rows"],
        "train_auc": judge.summary["train_auc"],
        "train_seconds": seconds,
        "judge": judge,
    }


def assistant_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures stored with the version (``flywheel models list``)."""
    summary: dict[str, Any] = {
        "task": "assistant",
        "chunks": metrics["knowledge_base"]["chunks"],
        "thresholds": metrics["thresholds"],
    }
    evaluation = metrics.get("evaluation")
    if evaluation:
        hybrid = evaluation["retrieval"].get("hybrid") or next(
            iter(evaluation["retrieval"].values())
        )
        answers = evaluation["answers"]
        summary.update(
            {
                "hit@1": hybrid["hit@1"],
                "hit@5": hybrid["hit@5"],
                "mrr": hybrid["mrr"],
                "answer_accuracy": answers["answer_accuracy"],
                "handoff_precision": answers["handoff_precision"],
                "handoff_recall": answers["handoff_recall"],
                "latency_p50_ms": answers["latency_ms"]["p50"],
            }
        )
    return summary


def load_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise NotFoundError(f"{model_dir} is not an assistant folder ({MANIFEST} is missing)")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = [
    "BuildResult",
    "DEMO_EVAL_SET",
    "DEMO_KNOWLEDGE_BASE",
    "assistant_summary",
    "build_assistant",
    "help_center_dir",
    "load_manifest",
    "resolve_eval_set",
    "resolve_knowledge_base",
]
