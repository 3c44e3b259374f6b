"""Fine-tuning on two CPU processes (gloo DDP): the quality of one process, and
checkpoints that resume with another process count, both ways.

Tolerance: same data, seed and global batch; the two runs differ in the order rows are
drawn (a distributed sampler shards each epoch), so their test macro-F1 may differ by
noise. The test split has 30 rows; a difference of two rows' worth (0.07) is allowed,
and both runs must learn the task (macro-F1 >= 0.9 on the tiny synthetic data).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiflywheel.errors import ModelError
from aiflywheel.training.distributed import check_nproc, per_process_batch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402

TOLERANCE = 0.07  # two of 30 test rows
RECIPE = """\
feature: tiny-sentiment
seed: 7
data: {{source: {data}, columns: {{text: text, label: label}}}}
model: {{name: {model}, method: finetune}}
train: {{epochs: 12, batch_size: 16, learning_rate: 0.003, early_stopping_patience: 4,
        freeze_embeddings: false}}
evaluate: {{bootstrap_resamples: 100, explain_mistakes: 0}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp-world")
    rows = sentiment_rows(300)
    build_tiny_bert(root / "tiny-bert", [text for text, _ in rows])
    with (root / "reviews.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    (root / "recipe.yaml").write_text(
        RECIPE.format(data=root / "reviews.csv", model=root / "tiny-bert"), encoding="utf-8"
    )
    return root


def _start(world: Path, home: Path, *launch: str, nproc: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, *(launch or ("-m", "aiflywheel.cli")), "train", "recipe.yaml"]
    if nproc is not None:
        command += ["--nproc", str(nproc)]
    return subprocess.Popen(
        command,
        cwd=world,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a SIGINT reaches the leader only, as `kill -INT` would
    )


def _finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output
    return output


def _checkpoints(home: Path) -> list[int]:
    found = (home / "runs" / "tiny-sentiment").glob(".train-*/checkpoints/checkpoint-*")
    return sorted(int(path.name.rsplit("-", 1)[1]) for path in found)


def _interrupt_after_checkpoint(process: subprocess.Popen, home: Path, after: int) -> str:
    """SIGINT once a checkpoint past step ``after`` exists; the output (exit 130)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not [s for s in _checkpoints(home) if s > after]:
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 130, output
    assert "interrupted: training interrupted at step" in output and "Traceback" not in output
    return output


def _metrics(home: Path) -> dict:
    (path,) = (home / "runs" / "tiny-sentiment").glob("*/metrics.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _store(home: Path):
    from aiflywheel.store import Store

    return Store(f"sqlite:///{home / 'flywheel.db'}")


def _f1(home: Path) -> float:
    return _metrics(home)["model"]["metrics"]["macro_f1"]


@pytest.fixture(scope="module")
def one_process(world: Path, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("one-process")
    _finish(_start(world, home))
    return home


def test_two_processes_reach_the_quality_of_one(world: Path, one_process: Path, tmp_path) -> None:
    """Launched by torchrun (as on several machines); ``--nproc`` is the next test's."""
    home = tmp_path / "two"
    launch = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    output = _finish(_start(world, home, *launch, "-m", "aiflywheel.cli"))
    assert "(max_length 16, 2 processes)" in output
    two, one = _f1(home), _f1(one_process)
    assert one >= 0.9 and two >= 0.9
    assert abs(two - one) <= TOLERANCE, (one, two)
    (run_dir,) = (p for p in (home / "runs" / "tiny-sentiment").iterdir() if p.name[0] != ".")
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["step"] for entry in log if "loss" in entry]
    assert losses and len(losses) == len(set(losses))  # rank 0 alone writes the log
    assert not (run_dir / "checkpoints").exists()
    assert not list(home.glob("runs/tiny-sentiment/.train-*"))  # no .partial left
    (run, _), *_ = _store(home).list_runs()
    assert run.status == "succeeded" and run.summary["version"] == 1


def test_a_checkpoint_resumes_with_another_process_count_both_ways(
    world: Path, one_process: Path, tmp_path: Path
) -> None:
    home = tmp_path / "chain"
    _interrupt_after_checkpoint(_start(world, home, nproc=2), home, after=0)
    stopped_at = max(_checkpoints(home))
    (checkpoint,) = home.glob(f"runs/tiny-sentiment/.train-*/checkpoints/checkpoint-{stopped_at}")
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}

    resumed = _start(world, home)  # 2 -> 1
    output = _interrupt_after_checkpoint(resumed, home, after=stopped_at)
    assert "resuming from the checkpoints" in output
    stopped_again = max(_checkpoints(home))
    assert stopped_again > stopped_at

    output = _finish(_start(world, home, nproc=2))  # 1 -> 2
    assert "resuming from the checkpoints" in output and "2 processes" in output
    assert _f1(home) >= 0.9 and abs(_f1(home) - _f1(one_process)) <= TOLERANCE
    statuses = sorted(run.status for run, _ in _store(home).list_runs())
    assert statuses == ["interrupted", "interrupted", "succeeded"]


def test_bad_process_counts_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="--nproc must be at least 1, got 0"):
        check_nproc(0)
    with pytest.raises(ModelError, match="batch_size 16 must be divisible by the 3 training"):
        per_process_batch(16, 3)
    assert per_process_batch(16, 2) == 8
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ModelError, match="inside a launcher that already started 2 processes"):
        check_nproc(2)
