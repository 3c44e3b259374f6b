"""Load test of `flywheel serve`: throughput, latency, errors, and no lost feedback.

    python benchmarks/load.py [--requests 20000] [--concurrency 32] [--feedback-every 4]
        [--rows 3000] [--max-batch 32] [--max-wait-ms 5]
        [--home DIR --feature NAME | --replicas N]

Without ``--home`` it trains the TF-IDF baseline on a sample of the packaged zh demo
reviews in a throwaway FLYWHEEL_HOME, registers and promotes it; with ``--home`` and
``--feature`` it serves that existing feature instead. Either way the server runs as a
subprocess on a free loopback port with auth on and a fresh client key. Every
``--feedback-every``-th request is feedback on an earlier prediction. After a graceful
stop (SIGTERM) it checks that the store holds exactly as many new feedback rows as
feedback requests answered 201, and as many new predictions as answered texts; it
exits 1 when they differ. Client and server share the machine's cores; the server's
CPU time per request (Linux /proc) is printed too, a figure that other jobs on a shared
machine disturb much less than req/s.

``--replicas N`` measures the deployment of ``deploy/replicas.py`` instead: a throwaway
PostgreSQL (the tests' ``tests/services/postgres.py``) holds the store, and the same load
runs through nginx first in front of 1 replica, then in front of N; it prints both
tables, the throughput ratio, and the count check of each (exit 1 on a mismatch).
Feedback then answers predictions at least 1 s old (a user reads before answering): a
prediction answered by one replica reaches the others through the store.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx

from aiflywheel.tasks.text_classification.demo_turn import free_port

# httpcore asks sniffio which async library runs on every request; when sniffio is not
# installed that is a failed import (a file-system search) per request. None in
# sys.modules makes the import fail at once, and httpcore falls back to asyncio.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


@dataclass
class Tally:
    """What the load generator saw."""

    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"classify": [], "feedback": []}
    )
    statuses: Counter = field(default_factory=Counter)
    predicted_texts: int = 0
    feedback_created: int = 0
    transport_errors: int = 0

    @property
    def errors(self) -> int:
        return self.transport_errors + sum(
            n for (_, status), n in self.statuses.items() if not 200 <= status < 300
        )


def demo_texts(rows: int, seed: int) -> tuple[list[str], list[str]]:
    from aiflywheel.data.demo_sources import load_demo_source

    table = load_demo_source("demo:zh-reviews")
    sample = random.Random(seed).sample(table.rows, min(rows, len(table.rows)))
    pairs = [(str(r["text"]).strip(), str(r["label"])) for r in sample if str(r["text"]).strip()]
    return [t for t, _ in pairs], [label for _, label in pairs]


def train_demo_feature(home: Path, rows: int) -> tuple[str, list[str]]:
    """Fit, save, register and promote the TF-IDF baseline; returns (feature, texts)."""
    from aiflywheel.core.versions import promote
    from aiflywheel.recipe import load_recipe
    from aiflywheel.store import open_store
    from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline

    recipe = load_recipe(Path(str(resources.files("aiflywheel.recipes") / "zh-reviews.yaml")))
    texts, labels = demo_texts(rows * 2, recipe.seed)
    train_texts, train_labels = texts[:rows], labels[:rows]
    started = time.perf_counter()
    model = TfidfBaseline(seed=recipe.seed).fit(train_texts, train_labels)
    model.save(home / "models" / "baseline")
    print(
        f"trained {model.name} on {len(train_texts)} rows in {time.perf_counter() - started:.1f} s"
    )
    store = open_store()
    dump = recipe.model_dump(mode="json")
    store.upsert_feature(recipe.feature, recipe.task, recipe.description, dump)
    version = store.register_model_version(
        recipe.feature,
        run_id=None,
        dataset_version_id=None,
        model_path=str(home / "models" / "baseline"),
        base_model="tfidf",
        method="baseline",
        metrics={},
        recipe=dump,
    )
    promote(store, recipe.feature, version.version, actor="benchmarks/load.py")
    return recipe.feature, texts[rows:] or texts


def feature_texts(feature: str, count: int) -> list[str]:
    """Texts for an existing feature: its logged inputs, else the zh demo reviews."""
    from sqlalchemy import select

    from aiflywheel.store import PredictionLog, open_store

    store = open_store()
    row = store.get_feature(feature)
    if row is None:
        raise SystemExit(f"no feature {feature!r} in {os.environ['FLYWHEEL_HOME']}")
    with store.session() as session:
        query = select(PredictionLog.text).where(PredictionLog.feature_id == row.id).limit(count)
        logged = [t for t in session.scalars(query) if t.strip()]
    return logged or demo_texts(count, 0)[0]


def served_labels(store, feature: str) -> list[str]:
    from aiflywheel.tasks.text_classification.models.base import read_manifest

    return list(read_manifest(Path(store.get_model_version(feature).model_path))["labels"])


async def run_load(
    base: str,
    key: str,
    feature: str,
    texts: list[str],
    labels: list[str],
    *,
    requests: int,
    concurrency: int,
    feedback_every: int,
    feedback_after: float = 0.0,
) -> tuple[Tally, float]:
    tally = Tally()
    recent: deque[tuple[float, str]] = deque(maxlen=10_000)
    tickets = iter(range(requests))
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient, ticket: int) -> None:
        wants_feedback = feedback_every > 0 and ticket % feedback_every == feedback_every - 1
        ripe = recent and time.perf_counter() - recent[0][0] >= feedback_after
        kind = "feedback" if wants_feedback and ripe else "classify"
        if kind == "feedback":
            pid = recent.popleft()[1]
            body: dict = {"prediction_id": pid, "idempotency_key": f"load-{pid}"}
            if rng.random() < 0.5:
                body["thumb"] = rng.choice(["up", "down"])
            else:
                body["corrected_label"] = rng.choice(labels)
            url = "/v1/feedback"
        else:
            body = {"feature": feature, "text": rng.choice(texts)}
            url = "/v1/classify"
        started = time.perf_counter()
        try:
            answer = await client.post(url, json=body)
        except httpx.HTTPError:
            tally.transport_errors += 1
            return
        tally.latencies[kind].append(time.perf_counter() - started)
        tally.statuses[(kind, answer.status_code)] += 1
        if kind == "classify" and answer.status_code == 200:
            tally.predicted_texts += 1
            recent.append((time.perf_counter(), answer.json()["prediction_id"]))
        elif kind == "feedback" and answer.status_code == 201:
            tally.feedback_created += 1

    async def worker(client: httpx.AsyncClient) -> None:
        for ticket in tickets:
            await one(client, ticket)

    # One single-connection client per worker: httpcore's shared pool rescans every
    # connection for every request, which costs more CPU than the server at 32 at once.
    clients = [
        httpx.AsyncClient(
            base_url=base,
            headers=headers,
            limits=httpx.Limits(max_connections=1),
            timeout=60,
            verify=False,  # plain HTTP on loopback: skip loading CA certificates 32 times
        )
        for _ in range(concurrency)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.aclose()
    return tally, elapsed


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (None where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"serve did not become ready in 120 s:\n{log.read_text()}")


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * 1000:.1f}"
    return f"{statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000:.1f}"


def report(tally: Tally, elapsed: float, requests: int) -> None:
    every = tally.latencies["classify"] + tally.latencies["feedback"]
    print(f"\n{requests} requests in {elapsed:.1f} s: {requests / elapsed:.0f} req/s")
    print(f"{'':10} {'n':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in (*tally.latencies.items(), ("all", every)):
        print(f"{name:10} {len(values):>7} {ms(values, 0.5):>8} {ms(values, 0.99):>8}")
    shown = ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(tally.statuses.items()))
    print(f"answers: {shown}; transport errors: {tally.transport_errors}")
    print(f"errors: {tally.errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--feedback-every", type=int, default=4)
    parser.add_argument("--rows", type=int, default=3000, help="training rows for the baseline")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--home", type=Path, help="an existing FLYWHEEL_HOME to load-test")
    parser.add_argument("--feature", help="the feature to load-test (with --home)")
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="load N replicas behind nginx on a throwaway Postgres, against 1 replica",
    )
    args = parser.parse_args(argv)
    if (args.home is None) != (args.feature is None):
        parser.error("--home and --feature go together")
    if args.replicas:
        if args.home is not None:
            parser.error("--replicas trains its own feature in a throwaway store; drop --home")
        if args.replicas < 1:
            parser.error(f"--replicas must be at least 1, got {args.replicas}")
        return replicas_main(args)

    with tempfile.TemporaryDirectory(prefix="flywheel-load-") as scratch:
        home = args.home or Path(scratch) / "home"
        os.environ["FLYWHEEL_HOME"] = str(home)
        if args.home is None:
            os.environ.pop("FLYWHEEL_DB_URL", None)
        from aiflywheel.store import open_store

        if args.feature is None:
            feature, texts = train_demo_feature(home, args.rows)
        else:
            feature, texts = args.feature, feature_texts(args.feature, 2000)
        store = open_store()
        labels = served_labels(store, feature)
        key, _ = store.create_api_key("client", "benchmarks/load.py")
        feedback_before = sum(store.feedback_counts(feature).values())
        predictions_before = store.count_predictions(feature)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = Path(scratch) / "serve.log"
        command = [
            sys.executable,
            "-m",
            "aiflywheel.cli",
            "serve",
            "--port",
            str(port),
            "--feature",
            feature,
            "--max-batch",
            str(args.max_batch),
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--log-level",
            "warning",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ)
        try:
            wait_ready(base, proc, log)
            print(
                f"serving {feature} at {base}; {args.requests} requests, {args.concurrency} at once"
            )
            load_average = os.getloadavg()[0]
            cpu_before = cpu_seconds(proc.pid)
            tally, elapsed = asyncio.run(
                run_load(
                    base,
                    key,
                    feature,
                    texts,
                    labels,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    feedback_every=args.feedback_every,
                )
            )
            cpu_after = cpu_seconds(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        report(tally, elapsed, args.requests)
        if cpu_before is not None and cpu_after is not None:
            spent = cpu_after - cpu_before
            print(
                f"server CPU: {spent:.1f} s, {spent / args.requests * 1000:.2f} ms per request "
                f"(machine load average at the start: {load_average:.1f})"
            )
        store = open_store()
        stored_feedback = sum(store.feedback_counts(feature).values()) - feedback_before
        stored_predictions = store.count_predictions(feature) - predictions_before
        print(
            f"feedback answered 201: {tally.feedback_created}; new feedback rows: {stored_feedback}"
        )
        print(
            f"texts answered 200: {tally.predicted_texts}; "
            f"new prediction rows: {stored_predictions}"
        )
        ok = (
            stored_feedback == tally.feedback_created
            and stored_predictions == tally.predicted_texts
        )
        if not ok:
            print(f"MISMATCH: the store lost or invented rows (server log: {log})")
            print(log.read_text()[-3000:])
        return 0 if ok else 1


def replicas_main(args: argparse.Namespace) -> int:
    """The same load through nginx against 1 replica, then ``args.replicas``, on Postgres."""
    repo = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(repo / "tests"), str(repo / "deploy")]
    from replicas import replicas

    from services.postgres import postgres_cluster

    figures: dict[int, float] = {}
    ok = True
    with (
        tempfile.TemporaryDirectory(prefix="flywheel-load-") as scratch,
        postgres_cluster() as cluster,
    ):
        home = Path(scratch) / "home"
        os.environ["FLYWHEEL_HOME"] = str(home)
        os.environ["FLYWHEEL_DB_URL"] = db_url = cluster.new_database()
        from aiflywheel.store import open_store

        feature, texts = train_demo_feature(home, args.rows)
        store = open_store()
        labels = served_labels(store, feature)
        key, _ = store.create_api_key("client", "benchmarks/load.py")
        serve_args = [
            "--feature",
            feature,
            "--max-batch",
            str(args.max_batch),
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--log-level",
            "warning",
        ]
        for count in sorted({1, args.replicas}):
            feedback_before = sum(store.feedback_counts(feature).values())
            predictions_before = store.count_predictions(feature)
            with replicas(count, db_url=db_url, home=home, serve_args=serve_args) as deployment:
                print(
                    f"\n== {count} replica(s) behind nginx at {deployment.url} on Postgres; "
                    f"{args.requests} requests, {args.concurrency} at once"
                )
                tally, elapsed = asyncio.run(
                    run_load(
                        deployment.url,
                        key,
                        feature,
                        texts,
                        labels,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        feedback_every=args.feedback_every,
                        feedback_after=1.0,
                    )
                )
                errors_log = deployment.root / "nginx-error.log"
                if tally.errors and errors_log.exists():
                    print(f"nginx errors:\n{errors_log.read_text(errors='replace')[-2000:]}")
            # Leaving the block stopped the replicas with SIGTERM: they stored what they answered.
            report(tally, elapsed, args.requests)
            figures[count] = args.requests / elapsed
            stored_feedback = sum(store.feedback_counts(feature).values()) - feedback_before
            stored_predictions = store.count_predictions(feature) - predictions_before
            print(
                f"feedback answered 201: {tally.feedback_created}; new feedback rows: "
                f"{stored_feedback}\ntexts answered 200: {tally.predicted_texts}; new "
                f"prediction rows: {stored_predictions}"
            )
            if (stored_feedback, stored_predictions) != (
                tally.feedback_created,
                tally.predicted_texts,
            ):
                print("MISMATCH: the store lost or invented rows")
                ok = False
    if args.replicas > 1:
        ratio = figures[args.replicas] / figures[1]
        print(
            f"\nthroughput: 1 replica {figures[1]:.0f} req/s; {args.replicas} replicas "
            f"{figures[args.replicas]:.0f} req/s (x{ratio:.2f}); {os.cpu_count()} CPU cores "
            "shared by the client, nginx, Postgres and the replicas"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
