"""Rows/s and peak memory of `flywheel predict FEATURE --input FILE --output FILE` as
the input grows: streamed, the memory should not grow with the file.

    python benchmarks/batch_predict.py [--rows 20000,200000] [--format csv]

A TF-IDF classifier (the project's baseline model) is trained on 300 synthetic reviews
and registered in a throwaway FLYWHEEL_HOME; each size is one `flywheel predict --input`
command in its own process (peak RSS from the kernel's accounting of that child).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def register_model(home: Path) -> None:
    os.environ["FLYWHEEL_HOME"] = str(home)
    from aiflywheel.store import open_store
    from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline
    from tiny_models import sentiment_rows

    rows = sentiment_rows(300)
    folder = home / "model"
    TfidfBaseline(seed=0).fit([t for t, _ in rows], [label for _, label in rows]).save(folder)
    store = open_store()
    recipe = {"task": "text_classification", "pii": {"mode": "redact"}}
    store.upsert_feature("bench", "text_classification", "", recipe)
    store.register_model_version(
        "bench",
        run_id=None,
        dataset_version_id=None,
        model_path=str(folder),
        base_model="tfidf",
        method="tfidf",
        metrics={},
        recipe=recipe,
    )


def write_input(path: Path, rows: int) -> None:
    from tiny_models import sentiment_rows

    texts = [text for text, _ in sentiment_rows(1000, seed=5)]
    if path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for i in range(rows):
                handle.write(json.dumps({"id": i, "text": texts[i % 1000]}) + "\n")
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(rows):
            text = texts[i % 1000]
            writer.writerow([i, f"{text} 电话 13812345678" if i % 9 == 0 else text])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="20000,200000")
    parser.add_argument("--format", default="csv", choices=["csv", "jsonl"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        register_model(root / "home")
        print("| input rows | input MB | seconds | rows/s | peak RSS MB |\n|---|---|---|---|---|")
        for rows in (int(n) for n in args.rows.split(",")):
            source = root / f"in-{rows}.{args.format}"
            write_input(source, rows)
            output = root / f"out-{rows}.{args.format}"
            env = {**os.environ, "FLYWHEEL_HOME": str(root / "home"), "OMP_NUM_THREADS": "1"}
            command = [
                sys.executable, "-c",
                "import resource, sys; from aiflywheel.cli import main; code = main(sys.argv[1:]);"
                " print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss);"
                " sys.exit(code)",
                "predict", "bench", "--input", str(source), "--output", str(output),
            ]  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(done.stdout + done.stderr)
            peak = int(done.stdout.rsplit("peak_kb", 1)[1].split()[0]) / 1024
            size = source.stat().st_size / 2**20
            print(f"| {rows:,} | {size:.1f} | {seconds:.1f} | {rows / seconds:,.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
