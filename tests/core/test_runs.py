"""The run lifecycle: one writer per feature, complete-or-absent folders, dead runs recovered."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiflywheel.core.runs import feature_run
from aiflywheel.errors import ConflictError
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store

sys.path.insert(0, str(Path(__file__).parents[1]))
from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402

RECIPE = """\
feature: locked
seed: 1
data: {{source: {data}, columns: {{text: text, label: label}}}}
model: {{name: {model}, method: {method}}}
train: {{epochs: {epochs}, batch_size: 8, learning_rate: 0.003, freeze_embeddings: false}}
evaluate: {{bootstrap_resamples: 100, explain_mistakes: 0}}
"""
COMPLETE = (
    "model/classifier.json",
    "baseline/classifier.json",
    "splits/test.jsonl",
    "dataset.jsonl",
    "metrics.json",
    "report.html",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs-world")
    rows = sentiment_rows(160)
    build_tiny_bert(root / "tiny-bert", [t for t, _ in rows])
    with (root / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return root


def _recipe(world: Path, tmp_path: Path, method: str = "head", epochs: int = 2) -> Path:
    path = tmp_path / f"{method}-{epochs}.yaml"
    path.write_text(
        RECIPE.format(
            data=world / "reviews.csv", model=world / "tiny-bert", method=method, epochs=epochs
        ),
        encoding="utf-8",
    )
    return path


def _flywheel(*args: str, **env: str) -> subprocess.Popen:
    script = Path(sys.executable).parent / "flywheel"
    return subprocess.Popen(
        [str(script), *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_second_run_on_a_locked_feature_stops_naming_the_running_one(tmp_path: Path) -> None:
    store = open_store()
    store.upsert_feature("f", "text_classification", "", {})
    runs_dir = get_settings().runs_dir
    with feature_run(store, runs_dir, "f", "train") as first:
        first.work_dir.mkdir(parents=True)
        with (
            pytest.raises(ConflictError, match=f"being written by run {first.run_id} \\(train"),
            feature_run(store, runs_dir, "f", "compress", wait_seconds=0.6),
        ):
            pass
        first.commit()
    (run, _), *rest = [r for r in store.list_runs("f") if r[0].id == first.run_id]
    assert run.status == "succeeded" and first.final_dir.is_dir()
    with feature_run(store, runs_dir, "f", "train") as again:  # the lock was released
        again.work_dir.mkdir(parents=True)


def test_a_failed_run_leaves_no_folder_and_is_recorded(tmp_path: Path) -> None:
    store = open_store()
    store.upsert_feature("f", "text_classification", "", {})
    with (
        pytest.raises(ValueError),
        feature_run(store, get_settings().runs_dir, "f", "train") as run,
    ):
        run.work_dir.mkdir(parents=True)
        (run.work_dir / "half.json").write_text("{")
        raise ValueError("boom")
    assert not run.work_dir.exists() and not run.final_dir.exists()
    ((row, _),) = store.list_runs("f")
    assert row.status == "failed" and row.error == "boom"


def test_two_trains_at_once_never_register_a_half_written_version(
    world: Path, tmp_path: Path
) -> None:
    recipe = str(_recipe(world, tmp_path))
    first, second = _flywheel("train", recipe), _flywheel("train", recipe)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], outputs
    refused = next(o for p, o in zip((first, second), outputs, strict=True) if p.returncode == 2)
    assert "feature 'locked' is being written by run" in refused and "Traceback" not in refused

    waiting = [_flywheel("train", recipe, FLYWHEEL_LOCK_WAIT="240") for _ in range(2)]
    for process in waiting:
        assert process.wait(timeout=300) == 0, process.stdout.read()

    store = open_store()
    versions = store.list_model_versions("locked")
    assert len({row.run_id for row, _ in versions}) == 3  # (a winning baseline registers too)
    for row, _ in versions:
        run_dir = Path(row.model_path).parent
        for name in COMPLETE:
            assert (run_dir / name).is_file(), f"v{row.version} lacks {name}"
    assert not list((get_settings().runs_dir / "locked").glob("*.partial"))


def test_a_killed_run_shows_as_failed_the_next_time_the_store_opens(
    world: Path, tmp_path: Path
) -> None:
    recipe = str(_recipe(world, tmp_path, "finetune", epochs=100))
    process = _flywheel("train", recipe)
    db = get_settings().home / "flywheel.db"
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.3)
        if get_settings().db_url or db.exists():  # Postgres: the database is there already
            store = Store(get_settings().store_url)  # a plain open: no recovery yet
            running = [r for r, _ in store.running_runs() if r.kind == "train"]
    if not running:
        process.kill()
        pytest.fail(f"the train run never started: {process.communicate()[0]}")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)

    assert [r.id for r, _ in store.running_runs()] == [running[0].id]  # nobody has looked yet
    reopened = open_store()
    ((row, _),) = reopened.list_runs("locked")
    assert row.status == "failed" and "killed or crashed" in row.error
    assert reopened.running_runs() == []
