"""Wall time and macro-F1 of the baseline, head and finetune methods on both demos.

    python benchmarks/train_classifier.py [--demo zh-reviews|en-reviews|all]
        [--methods head,finetune] [--set train.epochs=2 --set model.max_length=128 ...]

Each row is one `train_feature` run of the demo recipe with the method overridden, in a
throwaway FLYWHEEL_HOME; the TF-IDF baseline is trained in the same process on the same
split, so the ratios compare like with like. Prints one line per run and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from importlib import resources
from pathlib import Path

from aiflywheel.recipe import load_recipe, parse_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import Store
from aiflywheel.tasks.text_classification.train import train_feature


def apply_overrides(obj: dict, overrides: list[str]) -> None:
    """``section.key=value`` pairs; values are parsed as JSON (null, numbers) or kept as text."""
    for item in overrides:
        dotted, _, raw = item.partition("=")
        *parents, key = dotted.split(".")
        node = obj
        for part in parents:
            node = node[part]
        try:
            node[key] = json.loads(raw)
        except json.JSONDecodeError:
            node[key] = raw


def run(demo: str, method: str, overrides: list[str]) -> dict:
    recipe = load_recipe(Path(str(resources.files("aiflywheel.recipes") / f"{demo}.yaml")))
    obj = recipe.model_dump(mode="json")
    obj["model"]["method"] = method
    apply_overrides(obj, overrides)
    recipe = parse_recipe(obj, origin=f"{demo} ({method})", base_dir=recipe.base_dir)
    with tempfile.TemporaryDirectory() as home:
        os.environ["FLYWHEEL_HOME"] = home
        settings = get_settings()
        started = time.perf_counter()
        result = train_feature(recipe, store=Store(settings.store_url), settings=settings)
        wall = time.perf_counter() - started
    m = result.metrics
    row = {
        "demo": demo,
        "method": f"{recipe.model.name}/{method}",
        "train_rows": m["train_rows"],
        "baseline_f1": m["baseline"]["metrics"]["macro_f1"],
        "baseline_s": m["baseline"]["train_seconds"],
        "model_f1": m["model"]["metrics"]["macro_f1"],
        "ci": m["model"]["macro_f1_ci"],
        "gain_ci": m["comparison"]["ci"],
        "model_s": m["model"]["train_seconds"],
        "wall_s": wall,
    }
    print(
        f"{demo:10s} {row['method']:18s} rows {row['train_rows']:6d} | baseline F1 "
        f"{row['baseline_f1']:.4f} in {row['baseline_s']:6.1f}s | model F1 {row['model_f1']:.4f} "
        f"(95% CI {row['ci'][0]:.4f}-{row['ci'][1]:.4f}) in {row['model_s']:7.1f}s | gain CI "
        f"{row['gain_ci'][0] * 100:+.1f}..{row['gain_ci'][1] * 100:+.1f} pts | "
        f"whole run {wall:6.1f}s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="all", choices=["all", "zh-reviews", "en-reviews"])
    parser.add_argument("--methods", default="head,finetune")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE"
    )
    args = parser.parse_args()
    demos = ("zh-reviews", "en-reviews") if args.demo == "all" else (args.demo,)
    rows = [
        run(demo, method, args.overrides) for demo in demos for method in args.methods.split(",")
    ]
    if args.overrides:
        print("overrides:", " ".join(args.overrides))
    print("\ndemo        method              baseline F1  model F1  model/baseline time")
    for row in rows:
        print(
            f"{row['demo']:11s} {row['method']:18s}  {row['baseline_f1']:.4f}      "
            f"{row['model_f1']:.4f}    {row['model_s'] / max(row['baseline_s'], 1e-9):6.1f}x"
        )


if __name__ == "__main__":
    main()
