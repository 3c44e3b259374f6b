"""Real `flywheel serve` subprocesses on loopback ports, for tests that need a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


@contextmanager
def serve_processes(
    *servers: tuple[Path, int, tuple[str, ...]], ready_seconds: float = 90
) -> Iterator[list[tuple[subprocess.Popen, str, Path]]]:
    """`flywheel serve` for each (FLYWHEEL_HOME, port, extra args), all started at once
    (their startups overlap); yields (process, base URL, log file) of each when every one
    answers /readyz, and kills them on the way out."""
    running: list[tuple[subprocess.Popen, str, Path]] = []
    try:
        for home, port, args in servers:
            home.mkdir(parents=True, exist_ok=True)  # (on Postgres no store file made it)
            log = home / f"serve-{port}.log"
            env = {**os.environ, "FLYWHEEL_HOME": str(home)}
            command = [sys.executable, "-m", "aiflywheel.cli", "serve", "--port", str(port)]
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [*command, *args], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            running.append((proc, f"http://127.0.0.1:{port}", log))
        deadline = time.monotonic() + ready_seconds
        for proc, base, log in running:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited with {proc.returncode}:\n{log.read_text()}")
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"serve never became ready:\n{log.read_text()}")
                time.sleep(0.1)
        yield running
    finally:
        for proc, _, _ in running:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
