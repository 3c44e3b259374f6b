"""Wall time of `flywheel train --nproc N` against one process, same recipe and data.

    python benchmarks/train_nproc.py [--nproc 1,2] [--recipe RECIPE.yaml] [--repeat 1]

Without ``--recipe`` it builds the tiny world the tests use (a 2-layer, hidden-32 BERT
and 300 synthetic zh/en reviews, 12 epochs with early stopping). Each run is the whole
command in a fresh FLYWHEEL_HOME (start-up, data check, baseline, training, evaluation);
"fit" is the model-training time the run reports ("model trained in X s"), the part
that N processes share. Every process gets cores / N torch threads.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

RECIPE = """\
feature: tiny-sentiment
seed: 7
data: {{source: {data}, columns: {{text: text, label: label}}}}
model: {{name: {model}, method: finetune}}
train: {{epochs: 12, batch_size: 16, learning_rate: 0.003, early_stopping_patience: 4,
        freeze_embeddings: false}}
evaluate: {{bootstrap_resamples: 100, explain_mistakes: 0}}
"""


def tiny_recipe(root: Path) -> Path:
    from tiny_models import build_tiny_bert, sentiment_rows

    rows = sentiment_rows(300)
    build_tiny_bert(root / "tiny-bert", [text for text, _ in rows])
    with (root / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    path = root / "recipe.yaml"
    path.write_text(RECIPE.format(data=root / "reviews.csv", model=root / "tiny-bert"))
    return path


def run(recipe: Path, nproc: int, home: Path) -> dict:
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "aiflywheel.cli", "train", str(recipe)]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    fit = re.search(r"model trained in ([\d.]+) s", done.stdout)
    (metrics_file,) = home.glob("runs/*/*/metrics.json")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    return {
        "nproc": nproc,
        "wall_s": wall,
        "fit_s": float(fit.group(1)) if fit else float("nan"),
        "macro_f1": metrics["model"]["metrics"]["macro_f1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", default="1,2", help="Process counts to compare.")
    parser.add_argument("--recipe", type=Path, help="A recipe (default: the tiny world).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per process count.")
    args = parser.parse_args()
    counts = [int(n) for n in args.nproc.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe = args.recipe or tiny_recipe(root)
        results = []
        for repeat in range(args.repeat):
            for nproc in counts:
                result = run(recipe, nproc, root / f"home-{nproc}-{repeat}")
                results.append(result)
                print(
                    f"nproc {nproc}: command {result['wall_s']:.1f} s, fit "
                    f"{result['fit_s']:.1f} s, test macro-F1 {result['macro_f1']:.3f}",
                    flush=True,
                )
    print(f"\n{os.cpu_count()} cores; median over {args.repeat} run(s)")
    print("| nproc | command wall s | fit s | macro-F1 |\n|---|---|---|---|")
    for nproc in counts:
        mine = [r for r in results if r["nproc"] == nproc]

        def median(key: str, rows: list[dict] = mine) -> float:
            values = sorted(r[key] for r in rows)
            return values[len(values) // 2]

        print(
            f"| {nproc} | {median('wall_s'):.1f} | {median('fit_s'):.1f} "
            f"| {median('macro_f1'):.3f} |"
        )


if __name__ == "__main__":
    main()
