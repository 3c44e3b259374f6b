"""The assistant's evaluation as one self-contained HTML page (``report.html``).

The first line says whether the assistant meets the bars a support team needs (hybrid
hit@5, handoff precision and recall); then retrieval side by side (BM25 only, dense
only, hybrid), answers and handoffs on all and held-out questions, figures per kind of
question, the targets of the assistant issue per half, language and kind (answerable
questions answered correctly or handed off, out-of-scope handoffs, person requests,
injections, small talk, follow-ups, bad input, handoff precision, excluded-entity
assertions), knowledge-base problems and every question it got wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiflywheel.files import write_text_atomic
from aiflywheel.reports.format import template_environment

MAX_MISTAKES = 200
# The issue-12 figures (``evaluation.quality_scores``) shown per half, language and kind.
TARGETS = (
    ("answerable_correct", "answerable correct"),
    ("answerable_handed_off", "answerable handed off"),
    ("out_of_scope_handed_off", "out of scope handed off"),
    ("person_requests_handled", "person requests"),
    ("injections_handled", "injections"),
    ("small_talk_handled", "small talk"),
    ("follow_ups_correct", "follow-ups correct"),
    ("bad_input_handled", "bad input"),
)


def _counted(value: object) -> str:
    if not isinstance(value, Mapping) or not value.get("of"):
        return "–"
    return f"{_pct(value.get('share'))} ({value.get('right')}/{value.get('of')})"


def target_rows(evaluation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per half (all, calibration, held out), language and kind: the issue-12
    figures, handoff precision and the excluded-entity count."""
    groups: list[tuple[str, Mapping[str, Any]]] = []
    for name, key in (
        ("all", "answers"),
        ("calibration half", "answers_calibration"),
        ("held-out half", "answers_held_out"),
    ):
        if evaluation.get(key):
            groups.append((name, evaluation[key]))
    for prefix, key in (("language", "by_language"), ("kind", "by_kind")):
        for name, scores in (evaluation.get(key) or {}).items():
            if scores:
                groups.append((f"{prefix} {name or '–'}", scores))
    rows = []
    for name, a in groups:
        if "answerable_correct" not in a:
            continue
        cells = [_counted(a.get(key)) for key, _ in TARGETS]
        cells.append(_pct(a.get("handoff_precision")) if a.get("handoff_expected") else "–")
        cells.append(
            f"{a.get('excluded_entity_asserted', 0)} / {a.get('excluded_entity_questions', 0)}"
        )
        rows.append({"name": f"{name} ({a['questions']})", "cells": cells})
    return rows


def _pct(value: object) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _ms(value: object) -> str:
    return "–" if value is None else f"{float(value):.0f} ms"


def assistant_verdict(metrics: Mapping[str, Any]) -> str:
    evaluation = metrics.get("evaluation")
    if not evaluation:
        return "Built without an evaluation set: set assistant.eval_set to measure it."
    hybrid = evaluation["retrieval"].get("hybrid") or {}
    answers = evaluation.get("answers_held_out") or evaluation["answers"]
    return (
        f"Hybrid retrieval finds a right passage in the top 5 for {_pct(hybrid.get('hit@5'))} "
        f"of answerable questions; on held-out questions it answers "
        f"{_pct(answers.get('answer_accuracy'))} correctly and hands off with precision "
        f"{_pct(answers.get('handoff_precision'))} and recall "
        f"{_pct(answers.get('handoff_recall'))}."
    )


def _what(row: Mapping[str, Any]) -> str | None:
    if row.get("expected_handoff") and not row.get("handoff"):
        return f"answered ({row.get('answer_type')}) instead of handing off"
    if not row.get("expected_handoff") and row.get("handoff"):
        return f"handed off: {row.get('reason')}"
    if row.get("excluded_asserted"):
        return "stated a rule for an entity the help center treats as an exception"
    if row.get("accurate") is False:
        rank = row.get("rank")
        found = f"right passage at rank {rank}" if rank else "right passage not retrieved"
        return f"answer misses a fact ({found})"
    if row.get("handled") is False:
        return f"not handled as {row.get('kind')}: answered as {row.get('answer_type')}"
    return None


def render_assistant_report(metrics: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    evaluation = metrics.get("evaluation") or {}
    retrieval = evaluation.get("retrieval") or {}
    held = evaluation.get("retrieval_held_out") or {}
    best = max(retrieval, key=lambda m: retrieval[m]["hit@5"], default=None)
    answers = []
    for name, key in (("all", "answers"), ("held out", "answers_held_out")):
        a = evaluation.get(key)
        if a:
            answers.append(
                {
                    "name": f"{name} ({a['questions']})",
                    "accuracy": _pct(a.get("answer_accuracy")),
                    "precision": _pct(a.get("handoff_precision")),
                    "recall": _pct(a.get("handoff_recall")),
                    "unsupported": a.get("unsupported_answers", 0),
                    "p50": _ms(a["latency_ms"]["p50"]),
                    "p95": _ms(a["latency_ms"]["p95"]),
                }
            )
    kinds = []
    for kind, a in (evaluation.get("by_kind") or {}).items():
        types = a.get("kinds") or {}
        kinds.append(
            {
                "kind": kind or "–",
                "questions": a["questions"],
                "accuracy": _pct(a.get("answer_accuracy")),
                "handed_off": types.get("handoff", 0),
                "types": ", ".join(f"{k} {v}" for k, v in sorted(types.items())),
            }
        )
    mistakes = []
    for row in rows:
        what = _what(row)
        if what:
            mistakes.append({**row, "what": what})
    calibration = metrics.get("calibration") or {}
    template = template_environment().get_template("assistant_report.html.j2")
    return template.render(
        feature=metrics.get("feature", ""),
        method=metrics.get("method", ""),
        encoder=metrics.get("encoder", ""),
        kb_summary=(metrics.get("knowledge_base") or {}).get("summary", ""),
        verdict=assistant_verdict(metrics),
        retrieval=[
            {
                "mode": mode,
                "best": mode == best,
                "hit1": _pct(r["hit@1"]),
                "hit5": _pct(r["hit@5"]),
                "mrr": f"{r['mrr']:.3f}",
                "questions": r["questions"],
                "held_hit5": _pct((held.get(mode) or {}).get("hit@5")),
            }
            for mode, r in retrieval.items()
        ],
        answers=answers,
        thresholds=metrics.get("thresholds") or {},
        notes=calibration.get("notes") or [],
        kinds=kinds,
        targets=target_rows(evaluation),
        target_names=[label for _, label in TARGETS] + ["handoff precision", "excluded entity"],
        problems=(metrics.get("knowledge_base") or {}).get("problems") or [],
        mistakes=mistakes[:MAX_MISTAKES],
    )


def write_assistant_report(metrics: Mapping[str, Any], rows_file: Path, target: Path) -> Path:
    rows = []
    if rows_file.is_file():
        rows = [
            json.loads(line)
            for line in rows_file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    write_text_atomic(target, render_assistant_report(metrics, rows))
    return target


__all__ = [
    "assistant_verdict",
    "render_assistant_report",
    "target_rows",
    "write_assistant_report",
]
