"""How long each console page takes to answer over a store of a given size.

    python benchmarks/console_pages.py [--feedback 5000] [--repeat 5] [--home DIR]

Without ``--home`` it fits a TF-IDF classifier on synthetic reviews in a throwaway
FLYWHEEL_HOME, registers two versions (v1 champion), logs ``--feedback`` predictions with
one feedback item each (a third of them corrections), and records one drift report;
with ``--home`` it reads that existing store (e.g. the `make demo` one) read-only except
for one API key. It signs in with an admin key through the real app (FastAPI TestClient,
in process) and prints the median and worst time of ``--repeat`` GETs of every page.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path


def build_store(home: Path, feedback: int) -> list[str]:
    """A tiny classifier feature with traffic and feedback; returns the page paths."""
    from aiflywheel.core.versions import promote
    from aiflywheel.store import open_store
    from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline

    rng = random.Random(0)
    good, bad = ["great", "love", "perfect", "很好"], ["awful", "broken", "hate", "很差"]
    rows = []
    for i in range(400):
        label = "positive" if i % 2 else "negative"
        rows.append((f"{rng.choice(good if i % 2 else bad)} item {i}", label))
    store = open_store()
    recipe = {"feature": "bench", "data": {"source": "x.csv"}}
    store.upsert_feature("bench", "text_classification", "", recipe)
    for version in (1, 2):
        model = TfidfBaseline().fit([t for t, _ in rows], [y for _, y in rows])
        path = home / "models" / f"v{version}" / "model"
        model.save(path)
        store.register_model_version(
            "bench", run_id=None, dataset_version_id=None, model_path=str(path),
            base_model="tfidf", method="baseline", recipe=recipe,
            metrics={"macro_f1": 0.9, "macro_f1_ci": [0.88, 0.92], "baseline_macro_f1": 0.5,
                     "beats_baseline": True},
        )
    promote(store, "bench", 1, actor="bench", reason="first")
    logged = []
    for i in range(feedback):
        text, label = rows[i % len(rows)]
        logged.append({"id": uuid.uuid4().hex, "feature": "bench", "version": 1,
                       "text": f"{text} #{i}", "label": label,
                       "probabilities": {label: 0.8, "x": 0.2}, "latency_ms": 1.0})
    store.log_predictions(logged)
    for i, row in enumerate(logged):
        if i % 3 == 0:
            other = "positive" if row["label"] == "negative" else "negative"
            store.add_feedback(row["id"], corrected_label=other)
        else:
            store.add_feedback(row["id"], thumb="up")
    return pages("bench")


def pages(feature: str) -> list[str]:
    return [
        "/console",
        f"/console/features/{feature}",
        f"/console/features/{feature}/versions/1",
        f"/console/review?feature={feature}",
        f"/console/review?feature={feature}&state=",
        "/console/audit",
        "/console/runs",
        "/console/keys",
        f"/console/drift?feature={feature}",
        f"/console/planner?feature={feature}",
        f"/console/insights?feature={feature}&embedder=tfidf",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--feature", default=None, help="With --home: the feature to read.")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="console-bench-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ.pop("FLYWHEEL_DB_URL", None)

    import re

    from fastapi.testclient import TestClient

    from aiflywheel.serve.app import create_app
    from aiflywheel.serve.config import ServeConfig
    from aiflywheel.store import open_store

    started = time.perf_counter()
    paths = build_store(home, args.feedback) if args.home is None else pages(args.feature)
    print(f"store ready in {time.perf_counter() - started:.1f} s ({home})")
    store = open_store()
    key, _ = store.create_api_key("admin", "console-bench")
    with TestClient(create_app(ServeConfig(), store), base_url="http://bench") as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text)
        client.post("/console/login", data={"key": key, "csrf": token.group(1)})
        print(f"{'page':<58} {'median ms':>10} {'max ms':>8} {'KB':>6}")
        for path in paths:
            times, size = [], 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                size = len(answer.content)
                if answer.status_code != 200:
                    raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
            print(f"{path:<58} {statistics.median(times):>10.1f} {max(times):>8.1f} "
                  f"{size / 1024:>6.0f}")


if __name__ == "__main__":
    main()
