"""What one group commit of the prediction log costs: store insert vs an fsync'd journal.

    python benchmarks/prediction_log.py [--commits 300] [--batches 1,8,32]

Before a prediction is answered it must be durable. Two ways were weighed: (a) append
the batch to a local journal file and fsync it (the store insert still follows, later,
on top), or (b) insert the batch into the store in one transaction and answer after the
commit (what ``serve/prediction_log.py`` does). For each batch size this prints the
milliseconds per commit of: (b) ``Store.log_predictions`` on the store the settings
name (a throwaway SQLite file unless FLYWHEEL_DB_URL is set), and (a) a JSON-lines
append + ``os.fsync`` in the same folder. Single-threaded; no server involved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path


def rows(count: int, feature: str) -> list[dict]:
    return [
        {
            "id": uuid.uuid4().hex,
            "feature": feature,
            "version": 1,
            "text": "这个手机的电池很耐用，屏幕也清楚 " * 2,
            "output": {"label": "positive", "probabilities": {"positive": 0.9, "negative": 0.1}},
            "latency_ms": 3.2,
        }
        for _ in range(count)
    ]


def timed(fn, batches: list[list[dict]]) -> list[float]:
    """Seconds of ``fn(batch)`` for each batch."""
    spent = []
    for batch in batches:
        started = time.perf_counter()
        fn(batch)
        spent.append(time.perf_counter() - started)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--batches", default="1,8,32")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="flywheel-log-bench-") as scratch:
        os.environ.setdefault("FLYWHEEL_HOME", str(Path(scratch) / "home"))
        from aiflywheel.store import open_store

        store = open_store()
        store.upsert_feature("bench", "text_classification", "benchmarks/prediction_log.py", {})
        journal_path = Path(scratch) / "journal.jsonl"
        print(f"store: {store.url}; journal: {journal_path}; {args.commits} commits each")
        print(f"{'batch':>6} {'(b) store ms':>13} {'(a) journal+fsync ms':>21}   (median / p99)")
        with journal_path.open("ab") as journal:

            def append(batch: list[dict]) -> None:
                lines = b"".join(
                    json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n"
                    for row in batch
                )
                journal.write(lines)
                journal.flush()
                os.fsync(journal.fileno())

            for size in sizes:
                batches = [rows(size, "bench") for _ in range(args.commits)]
                store_times = timed(store.log_predictions, batches)
                journal_times = timed(append, batches)

                def shown(values: list[float]) -> str:
                    p99 = statistics.quantiles(values, n=100)[98]
                    return f"{statistics.median(values) * 1000:.2f} / {p99 * 1000:.2f}"

                print(f"{size:>6} {shown(store_times):>13} {shown(journal_times):>21}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
