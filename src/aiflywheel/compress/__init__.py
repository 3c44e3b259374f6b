"""Compress: smaller, faster variants of a fine-tuned version, each measured and gated.

``compress_version(feature, version, ...)`` builds the variants that the recipe's
``compress`` section lists and registers each as its own model version::

    runs/<feature>/<run id>/        (built in .compress-<run id>.partial, renamed when done)
      compression.json               the parent and every variant as one table
      onnx/ int8/ fp16/ prune/ ...   one complete run folder per variant:
        model/                       classifier.json + ONNX graph + tokenizer.json
                                     (prune: a torch model, safetensors, like its parent)
        splits/ dataset.jsonl        the parent's, copied: the variant is judged on the
                                     parent's frozen test split, and a retrain from a
                                     compressed champion finds its data
        metrics.json report.html     the parent's evaluation (against its TF-IDF baseline)
                                     plus the ``compression`` figures

Every variant is compared with its parent on the same test rows (agreement of the
predicted labels, paired-bootstrap change of macro-F1) and both are timed the same way on
this machine (size on disk, p50/p95 latency at batch 1 and 32, throughput at batch 32).
The gate (``compress.max_macro_f1_drop``, in points) sets the status: ``candidate`` when
the variant loses at most that much, else ``rejected`` with the reason in
``metrics["gate"]``, which ``flywheel promote`` refuses without force.

The variants: ``onnx`` (``torch.onnx.export``, checked against torch before use),
``int8`` (ONNX Runtime dynamic quantization, int8 weights; the feed-forward MatMuls stay
fp32 when quantizing them too changes more predictions on the validation split than
``compress.int8_min_agreement`` allows), ``fp16`` (half-precision ONNX, only where a GPU
serves it), ``prune`` (the top encoder layers dropped, then a short recovery fine-tune on
the parent's training split; a torch model that can itself be compressed further),
``distill`` (a student with ``compress.distill_layers`` of the parent's layers trained on
its soft labels, see ``aiflywheel.compress.distill``) and ``distill-int8`` (that student in
ONNX, quantized to int8).

The package: ``variants`` (the registry: variant name -> builder), ``onnx`` (export, int8,
fp16), ``prune``, ``distill``, ``measure`` (size and speed) and ``stage`` (the gate and
``compress_version``, which builds, evaluates, times, gates and registers each variant).
"""

from __future__ import annotations

from aiflywheel.compress.distill import unlabeled_texts
from aiflywheel.compress.measure import Measurement, folder_bytes, measure
from aiflywheel.compress.onnx import (
    convert_fp16,
    export_onnx,
    feed_forward_matmuls,
    fp16_unavailable_reason,
    quantize_int8,
    quantize_int8_checked,
    require_onnx_stack,
)
from aiflywheel.compress.prune import check_keep_layers, layer_count, prune_top_layers
from aiflywheel.compress.stage import CompressResult, compress_version, gate_variant
from aiflywheel.compress.variants import VARIANTS

__all__ = [
    "VARIANTS",
    "CompressResult",
    "Measurement",
    "check_keep_layers",
    "compress_version",
    "convert_fp16",
    "feed_forward_matmuls",
    "export_onnx",
    "folder_bytes",
    "fp16_unavailable_reason",
    "gate_variant",
    "layer_count",
    "measure",
    "prune_top_layers",
    "quantize_int8",
    "quantize_int8_checked",
    "unlabeled_texts",
    "require_onnx_stack",
]
