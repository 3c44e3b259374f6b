"""The assistant's answerability judge against the e5 cosine, on the shipped help center.

Builds (or reuses, ``--index-dir``) the e5-small index of the demo help center, builds
the judge's training pairs from it, trains the judge, and prints on the shipped
evaluation set (calibration half, held-out half, all):

* AUC of answerable-vs-not for the best cosine and for the judge's best probability;
* hit@1 / hit@5 of the answerable questions before and after reranking the top hits;
* handoff precision / recall of the extractive assistant with thresholds calibrated
  (``evaluation.calibrate_thresholds``) on the calibration half, with and without judge;
* training time and the judge's added latency per question.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/assistant_judge.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", default="/tmp/aiflywheel-judge-bench/index")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from aiflywheel.settings import get_settings
    from aiflywheel.tasks.assistant.build import help_center_dir
    from aiflywheel.tasks.assistant.config import AssistantConfig
    from aiflywheel.tasks.assistant.encoders import encoder_from_name
    from aiflywheel.tasks.assistant.evaluation import (
        answer_scores,
        calibrate_thresholds,
        hit_rank,
        load_eval_set,
        split_eval_set,
    )
    from aiflywheel.tasks.assistant.judge import FeatureJudge, roc_auc
    from aiflywheel.tasks.assistant.judge_pairs import build_judge_pairs, pair_counts
    from aiflywheel.tasks.assistant.knowledge_base import load_knowledge_base
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
    from aiflywheel.tasks.assistant.policy import Thresholds
    from aiflywheel.tasks.assistant.service import assistant_from_parts

    encoder = encoder_from_name("e5-small")
    index_dir = Path(args.index_dir)
    if (index_dir / "manifest.json").exists() or any(index_dir.glob("*")):
        index = KnowledgeIndex.load(index_dir, encoder)
    else:
        kb = load_knowledge_base(help_center_dir(), max_chars=350, overlap=60)
        index = KnowledgeIndex.build(kb, encoder, index_dir)
    questions = load_eval_set(help_center_dir() / "eval.jsonl")
    calibration, held_out = split_eval_set(questions, 0.5)

    started, cpu = time.perf_counter(), time.process_time()
    pairs = build_judge_pairs(index)
    pairs_s = time.perf_counter() - started
    judge = FeatureJudge(index).fit(pairs)
    train_s, train_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"pairs: {len(pairs)} questions {pair_counts(pairs)}")
    print(f"judge rows: {judge.summary['rows']} ({judge.summary['answering_rows']} answering)")
    print(f"training: {train_s:.1f} s wall ({pairs_s:.1f} s building pairs), {train_cpu:.1f} s CPU")

    per_question: dict[str, tuple] = {}
    judge_ms: list[float] = []
    for q in questions:
        hits = index.search(q.question, args.top_k, mode="hybrid", candidates=50)
        cosine = max((h.dense_score or 0.0) for h in hits) if hits else 0.0
        t0 = time.perf_counter()
        reranked, probabilities = judge.rerank(q.question, hits)
        judge_ms.append(1000 * (time.perf_counter() - t0))
        best = float(probabilities[0]) if len(probabilities) else 0.0
        before = hit_rank(hits, q.expected) if q.answerable else None
        after = hit_rank(reranked, q.expected) if q.answerable else None
        per_question[q.id] = (cosine, best, before, after)

    def report(name, part):
        truth = [q.answerable for q in part]
        cos_auc = roc_auc([per_question[q.id][0] for q in part], truth)
        judge_auc = roc_auc([per_question[q.id][1] for q in part], truth)
        ans = [q for q in part if q.answerable]
        h = {
            key: (
                sum(per_question[q.id][col] == 1 for q in ans) / len(ans),
                sum((per_question[q.id][col] or 99) <= 5 for q in ans) / len(ans),
            )
            for key, col in (("before", 2), ("after", 3))
        }

        def precision_at_recall(column: int, recall: float = 0.9) -> float:
            """Best precision of 'not answerable' among cuts on the score with recall >= 0.9."""
            scores = [per_question[q.id][column] for q in part]
            best = 0.0
            for cut in sorted(set(scores)):
                flagged = [s <= cut for s in scores]
                hits = sum(f and not t for f, t in zip(flagged, truth, strict=True))
                needed = sum(not t for t in truth)
                if needed and hits / needed >= recall:
                    best = max(best, hits / max(sum(flagged), 1))
            return best

        print(
            f"{name:12s} precision of 'not answerable' at recall 0.9: cosine "
            f"{precision_at_recall(0):.3f} judge {precision_at_recall(1):.3f}"
        )
        print(
            f"{name:12s} n={len(part):3d} AUC cosine {cos_auc:.3f} judge {judge_auc:.3f} | "
            f"hit@1 {h['before'][0]:.3f} -> {h['after'][0]:.3f}, "
            f"hit@5 {h['before'][1]:.3f} -> {h['after'][1]:.3f}"
        )

    report("calibration", calibration)
    report("held-out", held_out)
    report("all", questions)
    print(
        f"judge latency per question: p50 {statistics.median(judge_ms):.2f} ms, "
        f"max {max(judge_ms):.2f} ms"
    )

    config = AssistantConfig(knowledge_base="demo:help-center", eval_set="demo:help-center-eval")
    for label, with_judge, reorder in (
        ("cosine", None, False),
        ("judge", judge, True),
        ("judge, retrieval order", judge, False),
    ):
        assistant = assistant_from_parts(index, config, Thresholds(0.0, 1.01), get_settings())
        assistant.judge = with_judge
        judge.reorder = reorder
        cal = calibrate_thresholds(assistant, calibration)
        assistant.thresholds = cal.thresholds
        for name, part in (("calibration", calibration), ("held-out", held_out)):
            replies = [assistant.answer(q.question) for q in part]
            scores = answer_scores(part, replies)
            print(
                f"{label:22s} {name:12s} hand off below {cal.thresholds.handoff_below:.3f}: "
                f"handoff precision {scores['handoff_precision']:.3f} recall "
                f"{scores['handoff_recall']:.3f}, answer accuracy {scores['answer_accuracy']:.3f}, "
                f"answered when answerable {scores['answered_when_answerable']:.3f}"
            )


if __name__ == "__main__":
    main()
