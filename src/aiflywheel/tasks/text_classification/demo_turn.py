"""One turn of the wheel over HTTP, for ``make demo`` and for trying the loop by hand.

``turn_the_wheel`` serves the champion with ``flywheel serve`` (a subprocess on a free
loopback port, with API keys), sends held-back labelled texts as user traffic, answers
every prediction as a user would (thumbs up when right, the true label when wrong),
accepts the answers as a reviewer, retrains through the gate, checks that the running
server switched to the new champion without a restart, and stops the server.

The "users" are rows of a labelled source that the feature never saw: rows whose text
(up to case, punctuation and spaces) is in the champion's dataset are left out.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.data.dataset import Dataset
from aiflywheel.data.ingest import ingest
from aiflywheel.data.text_normalize import near_duplicate_key
from aiflywheel.errors import ConflictError, DataError, ModelError
from aiflywheel.recipe import DataConfig
from aiflywheel.settings import Settings
from aiflywheel.store import Store

Report = Callable[[str], None]
BATCH = 16


@dataclass
class TurnResult:
    """What one turn did, for the summary and for tests."""

    served_version: int
    predictions: int
    accuracy_before: float
    feedback_stored: int
    corrections: int
    decision: str
    candidate_version: int
    answered_by_after: int
    reason: str


def held_back_users(
    sources: list[str], champion_dataset: Path, count: int, seed: int
) -> list[tuple[str, str]]:
    """``count`` labelled rows, shared evenly by ``sources``, that the feature never saw."""
    seen = {near_duplicate_key(r.text) for r in Dataset.from_jsonl(champion_dataset)}
    users: list[tuple[str, str]] = []
    for i, source in enumerate(sources):
        share = count // len(sources) + (1 if i < count % len(sources) else 0)
        rows = ingest(DataConfig(source=source), base_dir=Path.cwd(), seed=seed).dataset
        pool: dict[str, tuple[str, str]] = {}
        for record in rows:
            key = near_duplicate_key(record.text)
            if record.label is None or len(record.text.strip()) < 4 or key in seen:
                continue
            pool.setdefault(key, (record.text.strip(), record.label))
        candidates = list(pool.values())
        random.Random(seed).shuffle(candidates)
        if len(candidates) < share:
            raise DataError(
                f"{source} has {len(candidates)} labelled rows the feature has not seen; "
                f"asked for {share}"
            )
        users += candidates[:share]
    random.Random(seed).shuffle(users)
    return users


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    """A minimal JSON client for the flywheel API (standard library only)."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:
            raise ModelError(f"{method} {self.base}{path} failed: {exc}") from None


def start_server(port: int, settings: Settings, report: Report) -> subprocess.Popen:
    """``flywheel serve`` on ``port``, logging to a file; returns once /readyz answers 200."""
    env = {**os.environ, "FLYWHEEL_HOME": str(settings.home)}
    if settings.db_url:
        env["FLYWHEEL_DB_URL"] = settings.db_url
    log_path = settings.home / "logs" / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # A file, not a pipe: nobody reads a pipe here, and a full one would stall the server.
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiflywheel.cli",
                "serve",
                "--port",
                str(port),
                "--reload-interval",
                "1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    report(f"server log: {log_path}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise ModelError(f"flywheel serve exited early: {tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    report(f"flywheel serve is ready on http://127.0.0.1:{port}")
                    return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    stop_server(process)
    raise ModelError("flywheel serve did not become ready within 300 s")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM (the server drains and flushes its log), then wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def turn_the_wheel(
    feature: str,
    *,
    store: Store,
    settings: Settings,
    sources: list[str],
    users: int,
    seed: int = 7,
    report: Report = lambda _: None,
) -> TurnResult:
    """Serve -> predictions -> user answers -> review -> retrain -> gate -> hot swap."""
    from aiflywheel.core.versions import promote
    from aiflywheel.tasks.text_classification.retrain import retrain_feature

    champion = store.champion(feature)
    if champion is None:
        newest = store.get_model_version(feature)
        if VersionMetrics.of(newest).beats_baseline is False:
            # An override, said as one: the demo serves v1 to collect the feedback it lacks.
            reason = (
                f"first champion (demo): v{newest.version} does not beat its baseline yet; "
                "it is served to collect the feedback that the retrain learns from"
            )
            promote(store, feature, newest.version, actor="demo", reason=reason, force=True)
            report(
                f"promoted v{newest.version} to champion (forced: it does not beat its baseline)"
            )
        else:
            promote(store, feature, newest.version, actor="demo", reason="first champion (demo)")
            report(f"promoted v{newest.version} to champion (first champion)")
        champion = store.champion(feature)
    dataset_file = Path(champion.model_path).parent / "dataset.jsonl"
    traffic = held_back_users(sources, dataset_file, users, seed)
    report(f"{len(traffic)} held-back labelled texts from {' and '.join(sources)} play the users")

    client_key, _ = store.create_api_key("client", "demo users")
    admin_key, _ = store.create_api_key("admin", "demo reviewer")
    port = free_port()
    server = start_server(port, settings, report)
    try:
        client = Client(f"http://127.0.0.1:{port}", client_key)
        batches = [traffic[i : i + BATCH] for i in range(0, len(traffic), BATCH)]

        def classify(batch: list[tuple[str, str]]) -> list[dict[str, Any]]:
            status, body = client.call(
                "POST", "/v1/classify", {"feature": feature, "texts": [t for t, _ in batch]}
            )
            if status != 200:
                raise ModelError(f"classify answered {status}: {body}")
            return body["predictions"]

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            answered = [p for batch in pool.map(classify, batches) for p in batch]
        seconds = time.perf_counter() - started
        right = sum(p["label"] == label for p, (_, label) in zip(answered, traffic, strict=True))
        report(
            f"served {len(answered)} predictions with v{champion.version} in {seconds:.1f} s "
            f"({len(answered) / seconds:.0f}/s); the users say {right / len(answered):.1%} "
            "were right"
        )

        def answer(item: tuple[dict[str, Any], tuple[str, str]]) -> int:
            prediction, (_, label) = item
            body: dict[str, Any] = {
                "prediction_id": prediction["prediction_id"],
                "idempotency_key": f"demo-{prediction['prediction_id']}",
            }
            if prediction["label"] == label:
                body["thumb"] = "up"
            else:
                body.update(thumb="down", corrected_label=label)
            status, _ = client.call("POST", "/v1/feedback", body)
            return status

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(answer, zip(answered, traffic, strict=True)))
        stored = sum(200 <= s < 300 for s in statuses)
        if stored != len(statuses):
            raise ModelError(f"{len(statuses) - stored} feedback requests failed: {statuses[:5]}")
        corrections = len(answered) - right
        report(f"users answered all {stored}: {right} thumbs up, {corrections} corrections")

        pending = store.list_feedback(feature, state="pending")
        decisions = [(item.id, "accepted", None) for item in pending if item.label is not None]
        store.review_feedback(feature, decisions, reviewer="demo reviewer")
        report(f"the reviewer accepted {len(decisions)} answers")

        result = retrain_feature(
            feature, store=store, settings=settings, actor="demo reviewer", report=report
        )
        report(result.gate.reason)
        after = _wait_for_version(client, feature, result, report)
    finally:
        stop_server(server)
    return TurnResult(
        served_version=champion.version,
        predictions=len(answered),
        accuracy_before=right / len(answered),
        feedback_stored=stored,
        corrections=corrections,
        decision=result.decision,
        candidate_version=result.candidate_version,
        answered_by_after=after,
        reason=result.gate.reason,
    )


def _wait_for_version(client: Client, feature: str, result, report: Report) -> int:
    """The version the running server answers with once it noticed the decision."""
    expected = (
        result.candidate_version if result.decision == "promoted" else result.champion_version
    )
    deadline = time.monotonic() + 120
    version = None
    while time.monotonic() < deadline:
        status, body = client.call(
            "POST", "/v1/classify", {"feature": feature, "text": "物流很快，质量也不错"}
        )
        version = body.get("version") if status == 200 else None
        if version == expected:
            report(f"the running server now answers with v{version} (no restart)")
            return version
        time.sleep(0.5)
    raise ConflictError(f"the server still answers with v{version}, expected v{expected}")
