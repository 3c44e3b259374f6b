"""The serving benchmark's parts: the peer's micro-batcher and int8 model, and the run on a
store with no int8 variant yet (it used to die with `feature ... has no version N`)."""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.text_classification.train import train_feature

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).parent))
from peer_server import PeerBatcher  # noqa: E402

from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402

# The benchmark copies a SQLite store (and the batcher needs no store at all).
pytestmark = pytest.mark.sqlite_only

RECIPE = """\
feature: tiny-sentiment
seed: 7
data: {{source: {data}, columns: {{text: text, label: label}}}}
model: {{name: {model}, method: finetune}}
train: {{epochs: 4, batch_size: 16, learning_rate: 0.003, freeze_embeddings: false, threads: 1}}
evaluate: {{bootstrap_resamples: 100, explain_mistakes: 0, slices: []}}
compress: {{variants: [int8], latency_texts: 8, threads: 1}}
"""


def _batcher_run(predict, texts, **kwargs):
    async def go():
        batcher = PeerBatcher(predict, **kwargs)
        try:
            return batcher, await asyncio.gather(
                *(batcher.submit(t) for t in texts), return_exceptions=True
            )
        finally:
            await batcher.close()

    return asyncio.run(go())


def _lengths(texts):
    return np.array([[len(t), 0.0] for t in texts])


def test_peer_batcher_keeps_order_and_max_batch() -> None:
    texts = [f"text {'x' * i}" for i in range(70)]
    batcher, rows = _batcher_run(_lengths, texts, max_batch=16, max_wait_ms=50)
    assert [int(r[0]) for r in rows] == [len(t) for t in texts]  # each request its own row
    assert sum(batcher.batch_sizes) == 70 and max(batcher.batch_sizes) == 16
    assert batcher.batch_sizes[0] == 16  # 70 waiting requests fill batches, no waiting


def test_peer_batcher_waits_at_most_max_wait_for_company() -> None:
    async def go():
        batcher = PeerBatcher(_lengths, max_batch=32, max_wait_ms=40)
        started = time.perf_counter()
        row = await batcher.submit("alone")
        waited = time.perf_counter() - started
        late = await asyncio.gather(batcher.submit("a"), batcher.submit("bb"))
        await batcher.close()
        return batcher, waited, row, late

    batcher, waited, row, late = asyncio.run(go())
    assert 0.035 <= waited < 5 and int(row[0]) == 5
    assert batcher.batch_sizes == [1, 2] and [int(r[0]) for r in late] == [1, 2]
    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        PeerBatcher(_lengths, max_batch=0)


def test_peer_batcher_fails_only_the_bad_request() -> None:
    def predict(texts):
        if "bad" in texts:
            raise ValueError("cannot score 'bad'")
        return _lengths(texts)

    batcher, rows = _batcher_run(predict, ["a", "bad", "ccc"], max_batch=8, max_wait_ms=50)
    assert int(rows[0][0]) == 1 and int(rows[2][0]) == 3
    assert isinstance(rows[1], ValueError) and "bad" in str(rows[1])
    assert batcher.batch_sizes == [3]  # one batch; its failure retried request by request


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    rows = sentiment_rows(160)
    build_tiny_bert(tmp_path / "tiny-bert", [text for text, _ in rows])
    with (tmp_path / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        RECIPE.format(data=tmp_path / "reviews.csv", model=tmp_path / "tiny-bert"),
        encoding="utf-8",
    )
    train_feature(load_recipe(recipe), store=open_store(), settings=get_settings())
    return get_settings().home


def test_benchmark_makes_the_int8_variant_serves_it_and_builds_the_peer(
    tiny_store: Path, monkeypatch, capsys
) -> None:
    import serve_throughput

    monkeypatch.setenv("FLYWHEEL_HOME", str(tiny_store))
    # The store has v1 only; the run makes v2 (int8, still in the store's WAL) and serves it
    # from a copy of the store.
    results = serve_throughput.main(
        [
            "--home",
            str(tiny_store),
            "--feature",
            "tiny-sentiment",
            "--requests",
            "12",
            "--concurrency",
            "3",
            "--servers",
            "int8",
        ]
    )
    out = capsys.readouterr().out
    (name,) = results
    assert name.startswith("(c) flywheel serve, v2 int8")
    assert results[name]["errors"] == 0 and results[name]["throughput"] > 0
    assert 0.5 < results[name]["macro_f1"] <= 1
    assert "of the matmul figure" in out
    assert "v2 finetune+int8: fused" in out and "unfused" in out  # the fusion's own figure
    assert open_store().get_model_version("tiny-sentiment", 2).method == "finetune+int8"

    with pytest.raises(SystemExit):
        serve_throughput.main(["--home", str(tiny_store), "--servers", "int8,gpu"])
    assert "expected names of pipeline, peer, torch, int8" in capsys.readouterr().err
