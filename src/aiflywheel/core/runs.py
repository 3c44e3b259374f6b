"""The one run lifecycle: lock the feature, work in ``.partial``, rename, record.

Every stage that writes a run folder under ``runs/<feature>/`` (data check, train,
retrain, assistant build, compress) goes through ``feature_run``::

    with feature_run(store, runs_dir, feature, "train", work_name=".train-<key>") as run:
        ... write into run.work_dir ...
        run.commit()                 # rename .partial -> runs/<feature>/<run id>/
        ... register versions ...
        run.succeed(summary={...})   # the run row says succeeded

What it guarantees:

- **One writer per feature.** An exclusive ``flock`` on ``runs/<feature>/.lock`` is held
  from before the first file is written until the run is recorded. A second run on the
  same feature waits up to ``wait_seconds`` and then stops with a ``ConflictError`` naming
  the running run, so no version is registered from a folder another process is still
  writing. The kernel releases the lock when its process dies, even by SIGKILL.
- **Complete or absent.** Files are written under the ``.partial`` folder and renamed in
  one step. A failed run removes it; an interrupted one (Ctrl-C, exit 130) keeps it only
  when it holds checkpoints to resume from.
- **No run stays "running" forever.** ``recover_stale_runs`` (called whenever the store is
  opened through the settings) marks as failed every run still recorded as running whose
  feature lock is free: its process is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiflywheel.errors import ConflictError, TrainingInterrupted

LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
POLL_SECONDS = 0.5


class FeatureLock:
    """An exclusive, process-lifetime lock on ``runs/<feature>/`` (POSIX ``flock``)."""

    def __init__(self, feature_dir: Path) -> None:
        self.path = Path(feature_dir) / LOCK_FILE
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def describe_holder(self, holder: dict[str, Any]) -> None:
        """Write who holds the lock into the lock file (read by whoever waits for it)."""
        if self._fd is None:
            return
        data = json.dumps(holder).encode("utf-8")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def acquire_feature_lock(
    feature_dir: Path, *, feature: str, wait_seconds: float = 0.0
) -> FeatureLock:
    """The feature's lock, waiting up to ``wait_seconds``; else a ConflictError naming the run."""
    lock = FeatureLock(feature_dir)
    deadline = time.monotonic() + max(0.0, wait_seconds)
    while not lock.try_acquire():
        if time.monotonic() >= deadline:
            holder = lock.holder()
            who = (
                f"run {holder.get('run_id')} ({holder.get('kind')}, pid {holder.get('pid')} on "
                f"{holder.get('host')}, started {holder.get('started_at')})"
                if holder.get("run_id")
                else "another run"
            )
            waited = f" after waiting {wait_seconds:g} s" if wait_seconds > 0 else ""
            raise ConflictError(
                f"feature {feature!r} is being written by {who}{waited}; wait for it to "
                "finish (or stop it), then run again"
            )
        time.sleep(POLL_SECONDS)
    return lock


@dataclass
class ActiveRun:
    """A run in progress: where to write, and how to finish it."""

    store: Any
    run_id: str
    feature: str
    kind: str
    work_dir: Path
    final_dir: Path
    resumable: bool
    scratch: tuple[str, ...] = ()
    committed: bool = False
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resuming(self) -> bool:
        return (self.work_dir / CHECKPOINTS).is_dir()

    def commit(self) -> Path:
        """Drop scratch folders and rename the work folder to the run's final folder."""
        for name in (CHECKPOINTS, *self.scratch):
            shutil.rmtree(self.work_dir / name, ignore_errors=True)
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        self.work_dir.rename(self.final_dir)
        self.committed = True
        return self.final_dir

    def succeed(self, summary: dict | None = None, dataset_version_id: int | None = None) -> None:
        self.store.finish_run(
            self.run_id,
            status="succeeded",
            summary=summary or {},
            dataset_version_id=dataset_version_id,
        )
        self.finished = True


@contextmanager
def feature_run(
    store,
    runs_dir: Path,
    feature: str,
    kind: str,
    *,
    work_name: str | None = None,
    final_dir: Path | None = None,
    resumable: bool = False,
    scratch: tuple[str, ...] = (),
    wait_seconds: float | None = None,
) -> Iterator[ActiveRun]:
    """Lock ``feature``, record a run of ``kind``, and give its work folder (see module doc).

    ``work_name`` names the ``.partial`` folder (a stable name lets a rerun resume);
    ``final_dir`` defaults to ``runs/<feature>/<run id>``. ``wait_seconds`` defaults to
    the ``FLYWHEEL_LOCK_WAIT`` setting.
    """
    from aiflywheel.store import new_run_id

    if wait_seconds is None:
        from aiflywheel.settings import get_settings

        wait_seconds = get_settings().lock_wait
    feature_dir = Path(runs_dir) / feature
    lock = acquire_feature_lock(feature_dir, feature=feature, wait_seconds=wait_seconds)
    try:
        run_id = new_run_id()
        final = final_dir if final_dir is not None else feature_dir / run_id
        work_dir = (
            final.parent / f".{final.name}.partial"
            if work_name is None
            else feature_dir / f"{work_name}.partial"
        )
        lock.describe_holder(
            {
                "run_id": run_id,
                "kind": kind,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
        if not resumable and work_dir.exists():
            shutil.rmtree(work_dir)  # debris of a run that died before this one
        store.start_run(feature, kind, str(final), run_id=run_id)
        run = ActiveRun(
            store=store,
            run_id=run_id,
            feature=feature,
            kind=kind,
            work_dir=work_dir,
            final_dir=final,
            resumable=resumable,
            scratch=scratch,
        )
        try:
            yield run
        except BaseException as exc:
            interrupted = isinstance(exc, (TrainingInterrupted, KeyboardInterrupt))
            # A resumable run keeps its folder when interrupted, or when it holds checkpoints.
            keep = resumable and (interrupted or run.resuming)
            if not keep and not run.committed:
                shutil.rmtree(work_dir, ignore_errors=True)
            if not run.finished:
                message = str(exc) if isinstance(exc, Exception) else ""
                store.finish_run(
                    run_id,
                    status="interrupted" if interrupted else "failed",
                    error=message or type(exc).__name__,
                )
            raise
        if not run.finished:
            run.succeed()
    finally:
        lock.release()


def recover_stale_runs(store, runs_dir: Path) -> list[str]:
    """Mark as failed the runs recorded as running whose process is gone; their ids.

    A live run holds its feature's lock, so a free lock means nobody is writing. Runs
    whose feature folder is not on this machine (another host of a shared store) are
    left alone.
    """
    recovered = []
    for run, feature in store.running_runs():
        feature_dir = Path(runs_dir) / feature
        if not feature_dir.is_dir():
            continue
        lock = FeatureLock(feature_dir)
        if not lock.try_acquire():
            continue
        try:
            if store.fail_running_run(
                run.id,
                error="the process running it ended without recording a result (killed or crashed)",
            ):
                recovered.append(run.id)
        finally:
            lock.release()
    return recovered
