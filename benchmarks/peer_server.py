"""The peer server of `serve_throughput.py`: what a team would deploy instead of `flywheel serve`.

Hugging Face Optimum's recipe for a CPU classifier, built by hand because
``optimum[onnxruntime]`` (2.1.0 with optimum-onnx 0.1.0) would downgrade this project's
transformers 5.x to 4.57: the fine-tuned model exported to ONNX, ONNX Runtime dynamic
int8 quantization with Optimum's ``AutoQuantizationConfig.avx512_vnni(is_static=False,
per_channel=False)`` settings (int8 weights per tensor, uint8 activations, every
quantizable operator), an ``InferenceSession`` with ONNX Runtime's default graph
optimizations, the transformers fast tokenizer padding each batch to its longest text;
behind FastAPI with dynamic batching (``PeerBatcher``: at most ``max_batch`` requests,
waiting at most ``max_wait_ms`` for company).

    python benchmarks/peer_server.py MODEL_DIR PORT --prefix "query: " --max-length 128
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

PredictFn = Callable[[Sequence[str]], np.ndarray]


def build_peer_int8(onnx_dir: Path, out_dir: Path) -> Path:
    """Optimum's dynamic avx512_vnni quantization of the fp32 graph in ``onnx_dir``
    (int8 weights per tensor, every operator ONNX Runtime quantizes dynamically);
    writes ``model.onnx`` and the tokenizer files into ``out_dir``."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in onnx_dir.iterdir():
        if path.suffix == ".json" or path.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(path, out_dir / path.name)
    quantize_dynamic(
        onnx_dir / "model.onnx",
        out_dir / "model.onnx",
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=False,
    )
    return out_dir


class PeerBatcher:
    """Dynamic batching for single-text requests: ``submit(text)`` waits for the row.

    A batch closes at ``max_batch`` requests or ``max_wait_ms`` after its first one;
    ``predict`` runs on one worker thread. When a batch fails, each of its requests is
    retried alone, so a bad request fails by itself and the rest are answered.
    """

    def __init__(self, predict: PredictFn, *, max_batch: int = 32, max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {max_wait_ms}")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.batch_sizes: list[int] = []
        self._queue: asyncio.Queue[tuple[str, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peer-model")

    async def submit(self, text: str) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        future = loop.create_future()
        self._queue.put_nowait((text, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():  # already waiting: no need to wait
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            self.batch_sizes.append(len(batch))
            await self._answer(batch)

    async def _answer(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(
                self._executor, self.predict, [text for text, _ in batch]
            )
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for item in batch:  # find the request that broke it; answer the others
                await self._answer([item])
            return
        for (_, future), row in zip(batch, rows, strict=True):
            if not future.done():
                future.set_result(row)


def make_app(model_dir: Path, *, prefix: str, max_length: int, max_batch: int, max_wait_ms: float):
    """The FastAPI app: POST /classify {"text": ...} -> {"label", "score"}."""
    import onnxruntime as ort
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = AutoConfig.from_pretrained(model_dir).id2label
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    wanted = [i.name for i in session.get_inputs()]

    def predict(texts: Sequence[str]) -> np.ndarray:
        inputs = tokenizer(
            [prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        logits = session.run(None, {name: inputs[name].astype(np.int64) for name in wanted})[0]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    batcher = PeerBatcher(predict, max_batch=max_batch, max_wait_ms=max_wait_ms)
    app = FastAPI()

    class Body(BaseModel):
        text: str

    @app.post("/classify")
    async def classify(body: Body):
        row = await batcher.submit(body.text)
        best = int(np.argmax(row))
        return {"label": labels[best], "score": float(row[best])}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()
    app = make_app(
        args.model_dir,
        prefix=args.prefix,
        max_length=args.max_length,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
