"""Serving throughput: a transformers pipeline server, the peer, and `flywheel serve`.

One model, one request stream (one text per request) over loopback, one server at a time:

  (a) a plain FastAPI + transformers ``pipeline("text-classification")`` app, written
      here as the baseline a team would write first;
  (p) the peer: the strongest server a team would pick instead, Hugging Face Optimum's
      ONNX Runtime int8 model behind FastAPI with dynamic batching (``peer_server.py``;
      built by hand with Optimum's settings, see there why);
  (b) ``flywheel serve`` answering with the fine-tuned torch model;
  (c) ``flywheel serve`` answering with each int8 ONNX variant of that version in the
      store: the model quantized, and a distilled student quantized (``flywheel compress``
      with variants int8 / distill-int8; the plain int8 is made now when there is none).

For each: throughput, p50/p99 latency, macro-F1 on the frozen test split, and the ratios
to (a) and (p). Then, for each (c), FLOPs per request (from the model's shape and the
test texts' token counts) and the fraction of this CPU's measured fp32 matmul GFLOP/s it
reaches, and, for a variant quantized from a fused graph, its in-process throughput
against the same quantization of the unfused graph. Every server truncates at the
model's max_length.

    python benchmarks/serve_throughput.py --home .flywheel/demo/home --feature review-sentiment

``--servers`` picks rows (``pipeline,peer,torch,int8``); ``--requests``/``--concurrency``
size the run. Variants made here go into ``--home`` (FLYWHEEL_HOME is set to it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from aiflywheel.tasks.text_classification.demo_turn import free_port, stop_server

BASELINE_APP = """
import sys
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

model_dir, prefix, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
app = FastAPI()


class Body(BaseModel):
    text: str


@app.post("/classify")
def post(body: Body):
    out = classify(prefix + body.text, truncation=True, max_length=max_length)[0]
    return {"label": out["label"], "score": out["score"]}
"""


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {seconds} s")


async def drive(
    url: str, texts: list[str], body_key: str, concurrency: int, headers: dict[str, str]
) -> tuple[list[float], list[str | None], float]:
    """Send every text as its own request, ``concurrency`` at a time."""
    latencies: list[float] = [0.0] * len(texts)
    labels: list[str | None] = [None] * len(texts)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(texts)):
        queue.put_nowait(i)

    async def worker() -> None:
        async with httpx.AsyncClient(timeout=120, headers=headers) as client:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                answer = await client.post(url, json={body_key: texts[i]})
                latencies[i] = time.perf_counter() - started
                if answer.status_code == 200:
                    labels[i] = answer.json()["label"]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, labels, time.perf_counter() - started


def macro_f1(truth: list[str], predicted: list[str | None]) -> float:
    from aiflywheel.metrics.classification import classification_metrics

    labels = sorted(set(truth))
    shown = [p if p in labels else labels[0] for p in predicted]
    return classification_metrics(truth, shown, None, labels)["macro_f1"]


def measure_matmul_gflops(threads: int) -> float:
    """fp32 GFLOP/s of a 1024x1024 matmul with torch on this machine (best of 5)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, (time.perf_counter() - started) / 10)
    return 2 * 1024**3 / best / 1e9


def flops_per_text(
    model_dir: Path, texts: list[str], prefix: str, max_length: int, layers: int | None = None
) -> float:
    """Forward FLOPs of an encoder classifier, averaged over the texts' token counts
    (``layers`` overrides the encoder depth, for a pruned or distilled variant)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    h, ffn = config.hidden_size, config.intermediate_size
    layers = layers or config.num_hidden_layers
    total = 0.0
    for text in texts:
        n = len(tokenizer(prefix + text, truncation=True, max_length=max_length)["input_ids"])
        per_layer = 2 * n * (4 * h * h + 2 * h * ffn) + 2 * 2 * n * n * h
        total += layers * per_layer + 2 * h * h + 2 * h * config.num_labels
    return total / len(texts)


def print_row(name: str, result: dict, base: dict | None, peer: dict | None) -> None:
    def ratio(other: dict | None) -> str:
        return f"{result['throughput'] / other['throughput']:>7.2f}x" if other else f"{'-':>8}"

    print(
        f"{name:<34} {result['throughput']:>8.1f} {result['p50_ms']:>9.1f} "
        f"{result['p99_ms']:>9.1f} {result['macro_f1']:>9.4f} {ratio(base)} {ratio(peer)} "
        f"{result['errors']:>6}"
    )


def summarize(latencies, labels, seconds, truth) -> dict:
    ordered = sorted(latencies)
    return {
        "throughput": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "macro_f1": macro_f1(truth, labels),
        "errors": sum(label is None for label in labels),
    }


def int8_variants(store, feature: str, parent: int) -> list:
    """The int8 ONNX versions compressed from ``parent`` (of it, or of its student)."""
    return [
        row
        for row, _ in store.list_model_versions(feature)
        if row.method.endswith("+int8") and row.metrics.get("parent_version") == parent
    ]


def ensure_int8_variant(store, feature: str, parent: int) -> list:
    """The int8 variants of ``parent``; its plain int8 variant is made now when none exists."""
    found = int8_variants(store, feature, parent)
    if found:
        return found
    from aiflywheel.compress import compress_version
    from aiflywheel.recipe import parse_recipe
    from aiflywheel.settings import get_settings

    parent_row = store.get_model_version(feature, parent)
    obj = dict(parent_row.recipe)
    obj["compress"] = {**(obj.get("compress") or {}), "variants": ["int8"]}
    compress_version(
        feature,
        parent,
        store=store,
        settings=get_settings(),
        recipe=parse_recipe(obj),
        report=print,
    )
    return int8_variants(store, feature, parent)


def copy_store(home: Path, target: Path) -> Path:
    """A consistent copy of the SQLite store in ``home`` (its WAL included) at ``target``.

    Copying ``flywheel.db`` alone misses what is still in ``flywheel.db-wal``: a version
    registered moments ago (the int8 variant made by this script) is not in the copy.
    """
    import sqlite3

    source = sqlite3.connect(f"file:{home / 'flywheel.db'}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return target


def serve_version(home: Path, feature: str, version: int, port: int, scratch: Path):
    """`flywheel serve` of one version: a copy of the store where it is the champion."""
    from aiflywheel.store import Store

    copy = scratch / f"home-v{version}"
    copy.mkdir()
    copy_store(home, copy / "flywheel.db")
    store = Store(f"sqlite:///{copy / 'flywheel.db'}")
    champion = store.champion(feature)
    if champion is None or champion.version != version:
        store.change_champion(
            feature, version, action="promote", actor="benchmark", reason="benchmark copy"
        )
    key, _ = store.create_api_key("client", "benchmark")
    env = {**os.environ, "FLYWHEEL_HOME": str(copy)}
    log = (scratch / f"serve-v{version}.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiflywheel.cli",
            "serve",
            "--port",
            str(port),
            "--feature",
            feature,
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, {"Authorization": f"Bearer {key}"}


def build_peer(parent_dir: Path, scratch: Path, texts: list[str]) -> tuple[Path, Path]:
    """The peer's int8 model, and the fp32 ONNX export it was quantized from."""
    from peer_server import build_peer_int8

    from aiflywheel.compress.onnx import export_onnx
    from aiflywheel.tasks.text_classification.models.base import load_classifier

    exported = scratch / "peer-fp32"
    export_onnx(load_classifier(parent_dir), exported, texts=texts[:8])
    shutil.copy2(parent_dir / "config.json", exported / "config.json")  # id2label
    return build_peer_int8(exported, scratch / "peer-int8"), exported


def start_peer(model_dir: Path, port: int, prefix: str, max_length: int, scratch: Path):
    log = (scratch / "peer.log").open("w")
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("peer_server.py")),
            str(model_dir),
            str(port),
            "--prefix",
            prefix,
            "--max-length",
            str(max_length),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_classify(url: str, process: subprocess.Popen, body: dict, seconds: float = 300) -> None:
    """Wait until ``url`` answers a classification (the server has loaded its model)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with {process.returncode}")
        try:
            if httpx.post(url, json=body, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {seconds} s")


def fusion_gain(variant_dir: Path, unfused_fp32: Path, scratch: Path, texts: list[str]) -> str:
    """In-process throughput of a variant quantized from a fused graph against the same
    quantization (per channel, same fp32 MatMuls) of the unfused export."""
    from aiflywheel.compress.onnx import quantize_int8
    from aiflywheel.tasks.text_classification.models.onnx_classifier import OnnxClassifier

    fused = OnnxClassifier.load(variant_dir)
    note = fused.quantization or {}
    if not note.get("fused"):
        return "not fused"
    unfused = quantize_int8(
        unfused_fp32, scratch / "unfused-int8", keep_feed_forward=bool(note.get("fp32_matmuls"))
    )
    unfused = OnnxClassifier.load(unfused.directory)
    speeds = {}
    for name, model in (("fused", fused), ("unfused", unfused)):
        model.predict_proba(texts[:32], batch_size=16)  # opens the session
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            model.predict_proba(texts, batch_size=16)
            best = max(best, len(texts) / (time.perf_counter() - started))
        speeds[name] = best
    agree = float(
        np.mean(fused.predict_proba(texts).argmax(1) == unfused.predict_proba(texts).argmax(1))
    )
    return (
        f"fused {speeds['fused']:.1f} vs unfused {speeds['unfused']:.1f} texts/s in process "
        f"(batches of 16, best of 3) = {speeds['fused'] / speeds['unfused'] - 1:+.0%}; "
        f"{agree:.1%} of predictions agree"
    )


SERVERS = ("pipeline", "peer", "torch", "int8")


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".flywheel/demo/home"))
    parser.add_argument("--feature", default="review-sentiment")
    parser.add_argument("--version", type=int, default=None, help="torch version (champion)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated rows to run, of {', '.join(SERVERS)}",
    )
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SERVERS]
    if unknown or not wanted:
        parser.error(f"--servers: got {args.servers!r}, expected names of {', '.join(SERVERS)}")

    home = args.home.resolve()
    if not (home / "flywheel.db").is_file():
        parser.error(f"--home: {home} holds no flywheel.db (run `make demo` or flywheel train)")
    os.environ["FLYWHEEL_HOME"] = str(home)  # variants made here are written into this home
    sys.path.insert(0, str(Path(__file__).parent))  # peer_server

    from aiflywheel.data.dataset import Dataset
    from aiflywheel.store import Store

    store = Store(f"sqlite:///{home / 'flywheel.db'}")
    parent = store.get_model_version(args.feature, args.version)
    model_dir = Path(parent.model_path)
    manifest = json.loads((model_dir / "classifier.json").read_text(encoding="utf-8"))
    prefix = manifest.get("prefix") or ""
    # The baseline truncates where the model was trained to, as our server does.
    max_length = int(manifest.get("max_length") or 512)
    test = Dataset.from_jsonl(model_dir.parent / "splits" / "test.jsonl")
    rows = [test[i % len(test)] for i in range(args.requests)]
    texts, truth = [r.text for r in rows], [r.label for r in rows]
    variants = ensure_int8_variant(store, args.feature, parent.version) if "int8" in wanted else []
    cores = os.cpu_count() or 1
    listed = ", ".join(f"v{v.version} {v.method} ({v.status})" for v in variants) or "none"
    print(
        f"{args.feature}: v{parent.version} ({parent.base_model}/{parent.method}) and its int8 "
        f"variants {listed}; {len(texts)} single-text requests, {args.concurrency} at once, "
        f"{cores} cores"
    )

    results: dict[str, dict] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="serve-throughput-") as tmp:
        scratch = Path(tmp)
        if "pipeline" in wanted:
            app_file = scratch / "baseline_app.py"
            app_file.write_text(BASELINE_APP, encoding="utf-8")
            port = free_port()
            # The app reads the model folder, the e5 prefix and max_length from its argv.
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys, uvicorn; sys.argv = ['app', *sys.argv[1:4]]; "
                    f"sys.path.insert(0, {str(scratch)!r}); import baseline_app; "
                    f"uvicorn.run(baseline_app.app, port={port}, log_level='warning')",
                    str(model_dir),
                    prefix,
                    str(max_length),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"http://127.0.0.1:{port}/classify"
                wait_classify(url, process, {"text": "ok"})
                latencies, labels, seconds = asyncio.run(
                    drive(url, texts, "text", args.concurrency, {})
                )
                results["(a) FastAPI + transformers pipeline"] = summarize(
                    latencies, labels, seconds, truth
                )
            finally:
                stop_server(process)

        unfused_fp32 = None
        if "peer" in wanted or "int8" in wanted:
            peer_dir, unfused_fp32 = build_peer(model_dir, scratch, texts)
        if "peer" in wanted:
            port = free_port()
            process = start_peer(peer_dir, port, prefix, max_length, scratch)
            try:
                url = f"http://127.0.0.1:{port}/classify"
                wait_classify(url, process, {"text": "ok"})
                latencies, labels, seconds = asyncio.run(
                    drive(url, texts, "text", args.concurrency, {})
                )
                results["(p) peer: Optimum-style ORT int8"] = summarize(
                    latencies, labels, seconds, truth
                )
            finally:
                stop_server(process)

        servers = [(f"(b) flywheel serve, torch v{parent.version}", parent.version)] * (
            "torch" in wanted
        ) + [
            (f"(c) flywheel serve, v{v.version} {v.method.split('+', 1)[1]}", v.version)
            for v in variants
        ]
        for name, version in servers:
            port = free_port()
            process, headers = serve_version(home, args.feature, version, port, scratch)
            try:
                wait_ready(f"http://127.0.0.1:{port}/readyz", process)
                url = f"http://127.0.0.1:{port}/v1/classify"
                latencies, labels, seconds = asyncio.run(
                    drive(url, texts, "text", args.concurrency, headers)
                )
                results[name] = summarize(latencies, labels, seconds, truth)
            finally:
                stop_server(process)
        for variant in variants:
            if unfused_fp32 is not None and variant.metrics.get("layers") in (
                None,
                manifest_layers(model_dir),
            ):
                gain = fusion_gain(Path(variant.model_path), unfused_fp32, scratch, texts[:256])
                notes.append(f"v{variant.version} {variant.method}: {gain}")

    base = results.get("(a) FastAPI + transformers pipeline")
    peer = results.get("(p) peer: Optimum-style ORT int8")
    print(
        f"\n{'server':<34} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'macro-F1':>9} "
        f"{'vs (a)':>8} {'vs (p)':>8} {'errors':>6}"
    )
    for name, result in results.items():
        print_row(name, result, base, peer)
    for note in notes:
        print(note)
    gflops = measure_matmul_gflops(cores)
    print(f"\nThis CPU's fp32 matmul (1024x1024, torch): {gflops:.1f} GFLOP/s on {cores} threads")
    reference = base or peer
    for variant in variants:
        name = next(n for n in results if n.startswith(f"(c) flywheel serve, v{variant.version} "))
        result = results[name]
        flops = flops_per_text(
            model_dir, texts[:500], prefix, max_length, variant.metrics.get("layers")
        )
        reached = result["throughput"] * flops / 1e9
        line = (
            f"{name}: {flops / 1e9:.2f} GFLOP per request, {reached:.1f} GFLOP/s of model work "
            f"= {reached / gflops:.0%} of the matmul figure"
        )
        if reference is not None:
            drop = 100 * (reference["macro_f1"] - result["macro_f1"])
            line += f"; macro-F1 {-drop:+.2f} pts against {'(a)' if base else '(p)'}"
        for label, other in (("(a)", base), ("(p)", peer)):
            if other is not None:
                line += f"; vs {label} {result['throughput'] / other['throughput']:.2f}x"
        print(line)
    return results


def manifest_layers(model_dir: Path) -> int | None:
    """The encoder depth of the torch model in ``model_dir`` (from its config.json)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return config.get("num_hidden_layers")


if __name__ == "__main__":
    main()
