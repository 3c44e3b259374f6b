"""Time the data stage on the built-in demo sources and print its figures.

    python benchmarks/data_check.py [--source zh-reviews|en-reviews|all]

Prints rows read/kept, the wall time of each part (ingest, clean+PII, split, report)
and rows per second. Run on the same machine to compare changes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources
from pathlib import Path

from aiflywheel.data.check import check_data
from aiflywheel.data.clean import clean_dataset
from aiflywheel.data.ingest import ingest
from aiflywheel.data.split import split_dataset
from aiflywheel.recipe import load_recipe


def bench(name: str) -> None:
    recipe = load_recipe(Path(str(resources.files("aiflywheel.recipes") / f"{name}.yaml")))
    started = time.perf_counter()
    ingested = ingest(recipe.data, base_dir=recipe.base_dir, seed=recipe.seed)
    t_ingest = time.perf_counter() - started
    started = time.perf_counter()
    cleaned = clean_dataset(ingested.dataset, recipe.clean, recipe.pii, seed=recipe.seed)
    t_clean = time.perf_counter() - started
    started = time.perf_counter()
    split_dataset(cleaned.dataset, recipe.split, seed=recipe.seed)
    t_split = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = check_data(recipe, Path(tmp) / "run")
        t_total = time.perf_counter() - started
    rows = result.report["rows"]
    print(
        f"{name:11s} read {rows['read']:6d} kept {rows['kept']:6d} | ingest {t_ingest:5.2f}s "
        f"clean+pii {t_clean:5.2f}s split {t_split:5.2f}s | whole stage {t_total:5.2f}s "
        f"({rows['read'] / t_total:,.0f} rows/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="all", choices=["all", "zh-reviews", "en-reviews"])
    args = parser.parse_args()
    for name in ("zh-reviews", "en-reviews") if args.source == "all" else (args.source,):
        bench(name)


if __name__ == "__main__":
    main()
