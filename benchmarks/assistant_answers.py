"""Where the help-center assistant's answers fail, on the shipped evaluation set.

Builds (or reuses, ``--index-dir``) the e5-small index of the demo help center, calibrates
the thresholds on the calibration half (``evaluation.calibrate_thresholds``), evaluates
every question (``evaluation.evaluate_assistant``) and prints, for each extractive rank
prior given (``--rank-prior``, ``extractive.RANK_PRIOR`` by default):

* answerable correct / handed off, out of scope handed off, handoff precision, follow-ups
  and excluded-entity assertions, on all questions, each half and each language;
* the failure classes of the answerable questions: handed off for low similarity or
  because no passage sentence covered the question ("I don't know"), answered without
  the facts; each split by whether a right passage was in the top 5.

``--dump FILE`` writes one JSON object per question (reply, reason, cited and top-5
passages) for the last prior.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/assistant_answers.py --rank-prior 0.05 0.4
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/assistant_answers.py --judge no_answer
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any


def _share(block: dict[str, Any], key: str) -> str:
    value = block.get(key)
    if isinstance(value, dict):
        value = value.get("share")
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", default="/tmp/aiflywheel-answers-bench/index")
    parser.add_argument("--rank-prior", type=float, nargs="+", default=None)
    parser.add_argument("--dump", default=None, help="per-question JSONL (last prior)")
    parser.add_argument(
        "--judge",
        choices=("none", "no_answer", "confidence"),
        default="none",
        help="train the feature judge on the knowledge base and give it this role",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from aiflywheel.settings import get_settings
    from aiflywheel.tasks.assistant.build import help_center_dir
    from aiflywheel.tasks.assistant.config import AssistantConfig
    from aiflywheel.tasks.assistant.encoders import encoder_from_name
    from aiflywheel.tasks.assistant.evaluation import (
        NO_ANSWER_REASON,
        ask,
        calibrate_thresholds,
        evaluate_assistant,
        hit_rank,
        is_correct_answer,
        is_held_out,
        load_eval_set,
        split_eval_set,
    )
    from aiflywheel.tasks.assistant.extractive import RANK_PRIOR, ExtractiveGenerator
    from aiflywheel.tasks.assistant.knowledge_base import load_knowledge_base
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
    from aiflywheel.tasks.assistant.policy import Thresholds
    from aiflywheel.tasks.assistant.service import assistant_from_parts

    encoder = encoder_from_name("e5-small")
    index_dir = Path(args.index_dir)
    if index_dir.is_dir() and any(index_dir.iterdir()):
        index = KnowledgeIndex.load(index_dir, encoder)
    else:
        kb = load_knowledge_base(help_center_dir(), max_chars=350, overlap=60)
        index = KnowledgeIndex.build(kb, encoder, index_dir)
    questions = load_eval_set(help_center_dir() / "eval.jsonl")
    calibration, _ = split_eval_set(questions, 0.5)
    config = AssistantConfig(knowledge_base="demo:help-center", eval_set="demo:help-center-eval")

    judge = None
    if args.judge != "none":
        from aiflywheel.tasks.assistant.judge import FeatureJudge
        from aiflywheel.tasks.assistant.judge_pairs import build_judge_pairs

        started, cpu = time.perf_counter(), time.process_time()
        judge = FeatureJudge(index).fit(build_judge_pairs(index))
        print(
            f"judge trained: {time.perf_counter() - started:.1f} s wall, "
            f"{time.process_time() - cpu:.1f} s CPU"
        )

    for prior in args.rank_prior or [RANK_PRIOR]:
        started, cpu = time.perf_counter(), time.process_time()
        assistant = assistant_from_parts(index, config, Thresholds(0.0, 1.01), get_settings())
        assistant.generator = ExtractiveGenerator(rank_prior=prior)
        if judge is not None:
            assistant.judge, assistant.judge_role = judge, args.judge
        cal = calibrate_thresholds(
            assistant,
            calibration,
            target_recall=config.handoff_target_recall,
            faq_precision=config.faq_target_precision,
        )
        assistant.thresholds = cal.thresholds
        evaluation = evaluate_assistant(assistant, questions, held_out_share=0.5)
        print(
            f"\n== rank prior {prior}: hand off below {cal.thresholds.handoff_below:.3f}, "
            f"FAQ at {cal.thresholds.faq_at_least:.3f}, judge answers an 'I don't know' at "
            f"{cal.thresholds.answer_judge_at_least} "
            f"({time.perf_counter() - started:.1f} s wall, {time.process_time() - cpu:.1f} s CPU)"
        )
        blocks = [
            ("all", evaluation["answers"]),
            ("calibration", evaluation["answers_calibration"]),
            ("held-out", evaluation["answers_held_out"]),
        ]
        blocks += [(f"all {k}", v) for k, v in evaluation["by_language"].items()]
        blocks += [(f"held-out {k}", v) for k, v in evaluation["held_out_by_language"].items()]
        print(
            f"{'':16s} {'n':>4s} {'correct':>8s} {'ans.HO':>7s} {'oos.HO':>7s} "
            f"{'HO prec':>8s} {'follow':>7s} {'excl':>5s}"
        )
        for name, block in blocks:
            print(
                f"{name:16s} {block['questions']:4d} {_share(block, 'answerable_correct'):>8s} "
                f"{_share(block, 'answerable_handed_off'):>7s} "
                f"{_share(block, 'out_of_scope_handed_off'):>7s} "
                f"{_share(block, 'handoff_precision'):>8s} "
                f"{_share(block, 'follow_ups_correct'):>7s} "
                f"{block.get('excluded_entity_asserted', 0):5d}"
            )
        classes: Counter[tuple[str, str]] = Counter()
        rows = []
        for q in questions:
            reply = ask(assistant, q)
            rank = hit_rank(reply.hits, q.expected) if q.answerable else None
            if q.answerable:
                if is_correct_answer(q, reply):
                    outcome = "correct"
                elif reply.handoff and (reply.reason or "").startswith(NO_ANSWER_REASON):
                    outcome = "handed off: no sentence covers the question"
                elif reply.handoff:
                    outcome = "handed off: low similarity"
                else:
                    outcome = "answered without the facts"
                top5 = "right passage in top 5" if rank is not None and rank <= 5 else "not"
                classes[(outcome, top5)] += 1
            rows.append(
                {
                    "id": q.id,
                    "held_out": is_held_out(q),
                    "language": q.language,
                    "kind": q.kind,
                    "question": q.question,
                    "answerable": q.answerable,
                    "correct": q.answerable and is_correct_answer(q, reply),
                    "reply": reply.text,
                    "answer_type": reply.kind,
                    "reason": reply.reason,
                    "confidence": round(reply.confidence, 4),
                    "right_passage_rank": rank,
                    "cited": [c.to_json()["citation"] for c in reply.citations],
                    "top5": [h.chunk.citation for h in reply.hits[:5]],
                }
            )
        print("answerable questions by outcome:")
        for (outcome, top5), n in sorted(classes.items(), key=lambda kv: -kv[1]):
            print(f"  {n:4d}  {outcome} ({top5})")
        if args.dump:
            Path(args.dump).write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
            )


if __name__ == "__main__":
    main()
