"""Images/s served: `flywheel serve` (POST /v1/predict) against a plain torch server.

Both servers answer single-image multipart uploads with the same trained network (the
champion of ``--feature`` in ``--home``), one server at a time, over loopback, with
``--concurrency`` clients. The plain server is the one a team would write first:
FastAPI + Pillow decode + one torch forward per request (no validation limits, no
micro-batching, no prediction log). Then `flywheel serve` again with its int8 ONNX
variant when the store has one (``flywheel compress``).

    PYTHONPATH=src python benchmarks/image_serve.py --home /tmp/fmnist --feature fashion
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PLAIN_APP = """
import io, sys
import numpy as np
import torch
from fastapi import FastAPI, UploadFile
from PIL import Image
from aiflywheel.tasks.image_classification.models import ImageClassifier

model = ImageClassifier.load(sys.argv[1])
app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile):
    image = Image.open(io.BytesIO(await file.read())).convert("L").resize((model.size, model.size))
    x = torch.from_numpy(np.asarray(image, np.float32)[None, None] / 255.0)
    with torch.inference_mode():
        proba = torch.softmax(model.network(x), dim=1)[0]
    best = int(proba.argmax())
    return {"label": model.labels[best], "confidence": float(proba[best])}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {seconds} s")


async def drive(url: str, images: list[bytes], concurrency: int) -> dict:
    latencies = [0.0] * len(images)
    labels: list[str | None] = [None] * len(images)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(images)):
        queue.put_nowait(i)

    async def worker() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                answer = await client.post(url, files={"file": ("x.png", images[i], "image/png")})
                latencies[i] = time.perf_counter() - started
                if answer.status_code == 200:
                    labels[i] = answer.json()["label"]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "images_per_s": len(images) / seconds,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "labels": labels,
        "errors": sum(label is None for label in labels),
    }


def run_server(command: list[str], env: dict, base: str, path: str, images, concurrency) -> dict:
    """Start a server, wait for it, warm it with 64 requests, then time every image."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(base + ("/readyz" if path == "/v1/predict" else "/docs"), process)
        asyncio.run(drive(base + path, images[:64], concurrency))
        return asyncio.run(drive(base + path, images, concurrency))
    finally:
        process.terminate()
        process.wait(timeout=60)


def macro_f1(truth, labels) -> float:
    from aiflywheel.metrics.classification import classification_metrics

    names = sorted(set(truth))
    shown = [x if x in names else names[0] for x in labels]
    return classification_metrics(truth, shown, None, names)["macro_f1"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--feature", default="fashion")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["FLYWHEEL_HOME"] = str(args.home)

    from aiflywheel.store import open_store
    from aiflywheel.tasks.image_classification.images import png_bytes
    from aiflywheel.tasks.image_classification.train import read_splits

    store = open_store()
    champion = store.champion(args.feature)
    if champion is None:
        raise SystemExit(f"{args.feature} has no champion in {args.home}")
    test = read_splits(Path(champion.model_path).parent)["test"]
    n = min(args.images, len(test))
    import numpy as np

    chosen = sorted(np.random.default_rng(0).choice(len(test), n, replace=False).tolist())
    images = [png_bytes(test.pixels[i]) for i in chosen]  # a seeded sample of every label
    truth = [test.labels[i] for i in chosen]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
    }
    print(
        f"{n} test images, one per request, concurrency {args.concurrency}, "
        f"load average {os.getloadavg()}"
    )
    print(
        f"{'server':<34} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'macro-F1':>9} {'errors':>6}"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        app_file = Path(tmp) / "plain_app.py"
        app_file.write_text(PLAIN_APP, encoding="utf-8")
        port = free_port()
        plain_cmd = [
            sys.executable,
            "-c",
            f"import sys, uvicorn; sys.path.insert(0, {tmp!r}); import plain_app; "
            f"uvicorn.run(plain_app.app, port={port}, log_level='warning')",
            champion.model_path,
        ]
        results["plain torch (FastAPI + Pillow)"] = run_server(
            plain_cmd, env, f"http://127.0.0.1:{port}", "/predict", images, args.concurrency
        )
    versions = [("flywheel serve (torch)", champion.version)]
    for row, _ in store.list_model_versions(args.feature):
        if row.method.endswith("+int8") and row.metrics.get("parent_version") == champion.version:
            versions.append(("flywheel serve (int8 ONNX)", row.version))
    for name, version in versions:
        if version != champion.version:
            from aiflywheel.core.versions import promote

            promote(
                store,
                args.feature,
                version,
                actor="benchmark",
                reason="serve benchmark",
                force=True,
            )
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "aiflywheel.cli",
            "serve",
            "--no-auth",
            "--port",
            str(port),
            "--feature",
            args.feature,
            "--log-level",
            "warning",
        ]
        results[name] = run_server(
            command, env, f"http://127.0.0.1:{port}", "/v1/predict", images, args.concurrency
        )
        if version != champion.version:
            from aiflywheel.core.versions import promote

            promote(
                store,
                args.feature,
                champion.version,
                actor="benchmark",
                reason="serve benchmark done",
                force=True,
            )
    for name, result in results.items():
        print(
            f"{name:<34} {result['images_per_s']:>9.1f} {result['p50_ms']:>8.1f} "
            f"{result['p99_ms']:>8.1f} {macro_f1(truth, result['labels']):>9.4f} "
            f"{result['errors']:>6}"
        )
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
