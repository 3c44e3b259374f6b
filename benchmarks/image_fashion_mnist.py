"""Fashion-MNIST through the flywheel: CNN vs the pixel baseline, then ONNX / int8 variants.

Writes a seeded per-class subsample of the official training images as one PNG per image
in folders per label (the folder reader and every sanitizing step run on them), trains
the image_classification task (small CNN, a few epochs) on a stratified 70/10/20 split,
and compresses the result to ONNX and int8 through the compress gate. Prints the
figures; the machine's load average is printed before and after (the CPU is shared).

    FLYWHEEL_HOME=/tmp/fmnist PYTHONPATH=src python benchmarks/image_fashion_mnist.py \
        --per-class 2000 --epochs 4 --width 16 --batch-size 32 --lr 0.002 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--architecture", default="cnn")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--feature", default="fashion")
    args = parser.parse_args()

    from aiflywheel.core.registry import get_task
    from aiflywheel.core.versions import promote
    from aiflywheel.recipe import load_recipe
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store
    from aiflywheel.tasks.image_classification.demo_data import (
        FASHION_LABELS,
        fashion_mnist,
        write_label_folders,
    )

    settings = get_settings()
    work = settings.home / "fashion-data"
    print(f"load average before: {os.getloadavg()}")
    if not work.is_dir():
        pixels, labels = fashion_mnist("train")
        started = time.perf_counter()
        write_label_folders(pixels, labels, FASHION_LABELS, work, limit_per_class=args.per_class)
        print(f"wrote {args.per_class} PNGs per class in {time.perf_counter() - started:.1f} s")
    recipe_file = settings.home / f"{args.feature}.yaml"
    recipe_file.write_text(
        f"feature: {args.feature}\n"
        "task: image_classification\n"
        "image:\n"
        f"  source: {work}\n"
        "  size: 28\n"
        "  channels: 1\n"
        f"  architecture: {args.architecture}\n"
        f"  width: {args.width}\n"
        f"  learning_rate: {args.lr}\n"
        "split: {train: 0.7, val: 0.1, test: 0.2}\n"
        f"train: {{epochs: {args.epochs}, batch_size: {args.batch_size}, "
        f"threads: {args.threads}}}\n"
        f"compress: {{variants: [onnx, int8], threads: {args.threads}}}\n",
        encoding="utf-8",
    )
    recipe = load_recipe(recipe_file)
    store = open_store()
    task = get_task(recipe.task)
    started = time.perf_counter()
    built = task.train(recipe, store=store, settings=settings, report=print)
    wall = time.perf_counter() - started
    metrics = json.loads((built.run_dir / "metrics.json").read_text())
    model, baseline, comparison = metrics["model"], metrics["baseline"], metrics["comparison"]
    print(f"load average after training: {os.getloadavg()}")
    print(
        json.dumps(
            {
                "train_images": metrics["train_rows"],
                "test_images": metrics["test_rows"],
                "model": model["name"],
                "model_macro_f1": round(model["metrics"]["macro_f1"], 4),
                "model_macro_f1_ci": [round(x, 4) for x in model["macro_f1_ci"]],
                "baseline_macro_f1": round(baseline["metrics"]["macro_f1"], 4),
                "baseline_macro_f1_ci": [round(x, 4) for x in baseline["macro_f1_ci"]],
                "gain_points": round(100 * comparison["diff"], 2),
                "gain_ci_points": [round(100 * x, 2) for x in comparison["ci"]],
                "model_train_seconds": model["train_seconds"],
                "baseline_train_seconds": baseline["train_seconds"],
                "whole_run_seconds": round(wall, 1),
                "threads": args.threads,
                "report": str(built.report_html),
            },
            indent=2,
        )
    )
    promote(store, args.feature, built.version, actor="benchmark", reason="fashion benchmark")
    result = task.compress(
        args.feature, built.version, store=store, settings=settings, recipe=None, report=print
    )
    for row in result.rows:
        print(
            f"{row['variant']:>6} v{row['version']}: macro-F1 {row['macro_f1']:.4f} "
            f"({row['macro_f1_change_points']:+.2f} points), size {row['size_mb']:.2f} MB, "
            f"b1 p50 {row['latency_ms']['batch_1']['p50']:.2f} ms, "
            f"{row['throughput_per_s']:.0f} images/s at batch 32, "
            f"gate {'-' if row['gate'] is None else row['gate']['passed']}"
        )
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
