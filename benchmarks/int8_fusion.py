"""int8 with and without attention fusion, against the peer's int8, in process.

For a fine-tuned classifier folder (a `flywheel train` run's ``model``): the plain ONNX
export and the fused one (``export_onnx(fused=True)``), each quantized as
``flywheel compress`` does (feed-forward MatMuls fp32), the fused graph with every MatMul
int8, and the peer's model (``peer_server.build_peer_int8``: Optimum's dynamic
avx512_vnni settings on the plain export, run with the transformers tokenizer padding each
batch to its longest text). Each is timed on micro-batches of 16 test texts as they
arrive (best of 3) and scored by macro-F1 on the run's whole test split.

    python benchmarks/int8_fusion.py RUN_DIR/model --work /tmp/int8-fusion
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a fine-tuned classifier folder")
    parser.add_argument("--work", type=Path, required=True, help="folder for the exports")
    parser.add_argument("--texts", type=int, default=256, help="test texts timed")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from peer_server import build_peer_int8

    from aiflywheel.compress.onnx import export_onnx, quantize_int8
    from aiflywheel.data.dataset import Dataset
    from aiflywheel.metrics.classification import classification_metrics
    from aiflywheel.tasks.text_classification.models.base import load_classifier
    from aiflywheel.tasks.text_classification.models.onnx_classifier import OnnxClassifier

    src, out = args.model_dir, args.work
    out.mkdir(parents=True, exist_ok=True)
    test = Dataset.from_jsonl(src.parent / "splits" / "test.jsonl")
    texts, truth = test.texts, test.labels
    manifest = json.loads((src / "classifier.json").read_text(encoding="utf-8"))
    prefix, labels = manifest.get("prefix") or "", manifest["labels"]
    max_length = int(manifest.get("max_length") or 512)
    started = time.time()
    torch_model = load_classifier(src)
    export_onnx(torch_model, out / "plain", texts=texts[:8])
    fused = export_onnx(torch_model, out / "fused", texts=texts[:8], fused=True)
    print(f"exported in {time.time() - started:.0f} s; fused {fused.quantization['fused']}")
    del torch_model
    shutil.copy2(src / "config.json", out / "plain" / "config.json")
    models = {}
    for name, folder, keep in (
        ("fused int8, feed-forward fp32", "fused", True),
        ("unfused int8, feed-forward fp32", "plain", True),
        ("fused int8, every MatMul", "fused", False),
    ):
        target = out / f"int8-{folder}-{'ff32' if keep else 'all'}"
        shutil.rmtree(target, ignore_errors=True)
        quantize_int8(out / folder, target, keep_feed_forward=keep)
        models[name] = OnnxClassifier.load(target).predict_proba

    import onnxruntime as ort
    from transformers import AutoTokenizer

    peer_dir = build_peer_int8(out / "plain", out / "peer")
    tokenizer = AutoTokenizer.from_pretrained(peer_dir)
    session = ort.InferenceSession(str(peer_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]

    def peer(batch):
        encoded = tokenizer(
            [prefix + t for t in batch],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        return session.run(None, {n: encoded[n].astype(np.int64) for n in wanted})[0]

    models["peer: Optimum-style int8"] = peer
    sample = texts[: args.texts]
    print(f"{'model':<34} {'texts/s':>8} {'macro-F1':>9}")
    for name, predict in models.items():
        predict(sample[:16])
        best = 0.0
        for _ in range(3):
            begun = time.perf_counter()
            for i in range(0, len(sample), 16):  # micro-batches of 16 requests as they arrive
                predict(sample[i : i + 16])
            best = max(best, len(sample) / (time.perf_counter() - begun))
        rows = np.concatenate([predict(texts[i : i + 16]) for i in range(0, len(texts), 16)])
        shown = [labels[i] for i in rows.argmax(1)]
        f1 = classification_metrics(truth, shown, None, sorted(set(truth)))["macro_f1"]
        print(f"{name:<34} {best:>8.1f} {f1:>9.4f}")


if __name__ == "__main__":
    main()
