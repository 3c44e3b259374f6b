"""The text_to_text demo: CC-CEDICT zh->en glosses through the flywheel.

Trains the ``text-to-text`` template (``demo:cedict-zh-en``, a seeded sample, with the
help center's aligned FAQ questions as a second test set) with the sizes given here, and
prints each system's chrF and BLEU with 95% bootstrap CIs on the frozen test split and on
the FAQ questions, the verdicts, the training time, and the load average before and after
(the CPU is shared).

    FLYWHEEL_HOME=/tmp/t2t PYTHONPATH=src python benchmarks/text_to_text_cedict.py \
        --sample 20000 --hidden 128 --embedding 64 --max-vocab 8000 \
        --budget 1200 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from importlib import resources

import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, default=20000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--embedding", type=int, default=128)
    parser.add_argument("--max-vocab", type=int, default=20000)
    parser.add_argument("--budget", type=float, default=600, help="training seconds")
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--feature", default="zh-en-glossary")
    args = parser.parse_args()

    from aiflywheel.core.registry import get_task
    from aiflywheel.recipe import parse_recipe
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    template = resources.files("aiflywheel.recipes").joinpath("text-to-text.yaml").read_text()
    obj = yaml.safe_load(template)
    obj["feature"] = args.feature
    section = obj["text_to_text"]
    section.update(
        sample=args.sample,
        time_budget_s=args.budget,
        epochs=args.epochs,
        beam_size=args.beam,
        threads=args.threads,
    )
    section["model"].update(hidden=args.hidden, embedding=args.embedding, max_vocab=args.max_vocab)
    recipe = parse_recipe(obj)
    print(f"load average before: {os.getloadavg()}")
    started = time.perf_counter()
    built = get_task("text_to_text").train(
        recipe, store=open_store(), settings=get_settings(), report=print
    )
    wall = time.perf_counter() - started
    metrics = built.details.metrics
    print(f"load average after: {os.getloadavg()}")
    print(
        f"\n{metrics['direction']}: {metrics['train_rows']:,} training pairs, model trained in "
        f"{metrics['train_seconds']:.0f} s ({len(metrics['epochs'])} epochs), whole run "
        f"{wall:.0f} s; vocabulary {metrics['vocabulary']}"
    )
    for key, name in (("test", "CC-CEDICT test split"), ("extra_test", "FAQ questions")):
        result = metrics.get(key)
        if not result:
            continue
        print(f"\n{name} ({result['rows']} pairs)")
        print(f"  {'system':<16} {'chrF [95% CI]':<26} BLEU [95% CI]")
        for system, s in result["systems"].items():
            chrf, bleu = s["chrF"], s["BLEU"]
            print(
                f"  {system:<16} {chrf['score']:6.2f} [{chrf['ci'][0]:6.2f}, {chrf['ci'][1]:6.2f}]"
                f"   {bleu['score']:6.2f} [{bleu['ci'][0]:6.2f}, {bleu['ci'][1]:6.2f}]"
            )
        print(f"  verdict: {result['verdict']}")
        for example in result["examples"][:5]:
            print(f"    {example}")
    print(f"\nreport: {built.report_html}")


if __name__ == "__main__":
    main()
