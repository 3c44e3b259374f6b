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
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import logging
import math
import platform
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from aiflywheel.compress.distill import DistillSettings, distill_student
from aiflywheel.core.gate import Gate, at_least, at_most
from aiflywheel.core.runs import feature_run
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import DataError, ModelError, RecipeError, require_module
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.metrics.classification import classification_metrics, paired_bootstrap
from aiflywheel.recipe import Recipe, parse_recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.text_classification.evaluate import (
    evaluate_against_baseline,
    write_evaluation,
)
from aiflywheel.tasks.text_classification.models.base import check_texts, read_manifest
from aiflywheel.tasks.text_classification.models.onnx_classifier import (
    ONNX_EXTRA,
    OnnxClassifier,
    available_cores,
)
from aiflywheel.tasks.text_classification.models.roundtrip import reload_verified

Report = Callable[[str], None]

OPSET = 18
EXPORT_TOLERANCE = 1e-3
CHECK_TEXTS = (
    "很好，非常满意，推荐购买",
    "terrible, it broke after one day",
    "ok",
)
ONNX_VARIANTS = ("onnx", "int8", "fp16")
TABLE_COLUMNS = (
    "variant",
    "version",
    "size MB",
    "b1 p50 ms",
    "b1 p95 ms",
    "b32 p50 ms",
    "b32 p95 ms",
    "texts/s",
    "macro-F1",
    "change",
    "agreement",
    "gate",
)


# -- the pieces ----------------------------------------------------------------------------


def require_onnx_stack() -> None:
    """onnx, onnxruntime and onnxscript (the exporter's), or MissingExtraError naming the extra."""
    for module in ("onnx", "onnxruntime", "onnxscript"):
        require_module(module, what="ONNX export and quantization", install=ONNX_EXTRA)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' and quantizer's warnings and log lines (errors still raise)."""
    loggers = [
        logging.getLogger(),
        logging.getLogger("torch.onnx"),
        logging.getLogger("onnxscript"),
    ]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require_finetuned(classifier, what: str):
    from aiflywheel.tasks.text_classification.models.finetuned import FinetunedClassifier

    if not isinstance(classifier, FinetunedClassifier):
        kind = getattr(classifier, "kind", type(classifier).__name__)
        raise ModelError(f"{what} needs a fine-tuned transformer classifier, got kind {kind!r}")
    classifier._require_fitted()
    return classifier


def _input_names(model, tokenizer) -> list[str]:
    """The inputs the graph takes: ids and mask, plus token types where both sides use them."""
    accepted = inspect.signature(model.forward).parameters
    wanted = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepted and "token_type_ids" in tokenizer.model_input_names:
        wanted.append("token_type_ids")
    missing = [name for name in wanted if name not in accepted]
    if missing:
        raise ModelError(f"cannot export this model to ONNX: its forward takes no {missing[0]}")
    return wanted


def export_onnx(
    classifier,
    out_dir: str | Path,
    *,
    texts: Sequence[str] = (),
    tolerance: float = EXPORT_TOLERANCE,
    opset: int = OPSET,
    threads: int | None = None,
) -> OnnxClassifier:
    """The fine-tuned ``classifier`` as an ONNX graph in ``out_dir`` (an ``onnx`` classifier).

    The graph takes ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when the
    model and its tokenizer use them) with dynamic batch and sequence axes, and returns
    the logits. The export is checked against torch on up to 8 of ``texts`` plus a few
    fixed ones (one longer than ``max_length``, so truncation is checked too): a
    probability that differs by more than ``tolerance`` raises ModelError.
    """
    classifier = _require_finetuned(classifier, "ONNX export")
    require_onnx_stack()
    from aiflywheel.tasks.text_classification.models.encoding import torch_module

    torch = torch_module()
    model, tokenizer = classifier._model, classifier._tokenizer
    names = _input_names(model, tokenizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = out_dir / "model.onnx"

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            return self.model(**inputs).logits

    sample = tokenizer(
        [classifier.prefix + t for t in ("a short text", "a longer text, so that the batch pads")],
        padding=True,
        return_tensors="pt",
    )
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1)
    dynamic = {name: {0: batch, 1: sequence} for name in names}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    model.eval()
    try:
        with _quiet():
            torch.onnx.export(
                Logits().eval(),
                tuple(sample[name] for name in names),
                str(graph),
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
                external_data=weight_bytes > 1_800_000_000,  # protobuf files stop at 2 GB
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; the first line says what
        raise ModelError(
            f"ONNX export of {classifier.model_name} failed: {_first_line(exc)}"
        ) from exc
    _strip_debug_info(graph, external=weight_bytes > 1_800_000_000)
    tokenizer.save_pretrained(str(out_dir))
    if not (out_dir / "tokenizer.json").is_file():
        raise ModelError(
            f"ONNX export needs a fast tokenizer (tokenizer.json); {classifier.model_name} has "
            f"{type(tokenizer).__name__}"
        )
    if tokenizer.pad_token_id is None:
        raise ModelError(f"ONNX export: the tokenizer of {classifier.model_name} has no pad token")
    exported = OnnxClassifier(
        classifier.model_name,
        labels=classifier.labels,
        prefix=classifier.prefix,
        max_length=classifier.max_length,
        precision="fp32",
        model_file=graph.name,
        padding={
            "pad_id": int(tokenizer.pad_token_id),
            "pad_token": str(tokenizer.pad_token),
            "pad_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
            "direction": str(getattr(tokenizer, "padding_side", "right")),
        },
        threads=threads,
    )
    exported.save(out_dir)
    check = [*list(texts)[:8], *CHECK_TEXTS, " ".join([*list(texts)[:8], *CHECK_TEXTS] * 40)]
    diff = float(np.abs(classifier.predict_proba(check) - exported.predict_proba(check)).max())
    if not diff <= tolerance:
        raise ModelError(
            f"the ONNX export of {classifier.model_name} differs from the torch model by "
            f"{diff:.3g} in probability on {len(check)} check texts (tolerance {tolerance:g})"
        )
    return exported


def _strip_debug_info(graph: Path, *, external: bool) -> None:
    """Drop the exporter's per-node stack traces and module paths (most of a small graph's
    bytes, and local file paths nobody serving the model needs)."""
    onnx = require_module("onnx", what="ONNX export", install=ONNX_EXTRA)
    model = onnx.load(str(graph))
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    model.graph.doc_string = ""
    if external:
        onnx.save(model, str(graph), save_as_external_data=True, location=graph.name + ".data")
    else:
        onnx.save(model, str(graph))


def feed_forward_matmuls(graph: str | Path) -> tuple[list[str], int]:
    """Names of the MatMuls with a non-square weight, and the number of weighted MatMuls.

    In a BERT-like encoder these are the feed-forward projections (hidden -> 4x hidden
    -> hidden); the attention projections are square. The feed-forward blocks read
    LayerNorm and GELU activations with rare huge values (in e5-small up to 200x their
    spread), which leave a per-tensor int8 scale only a few levels for everything else.
    """
    onnx = require_module("onnx", what="int8 quantization", install=ONNX_EXTRA)
    model = onnx.load(str(graph), load_external_data=False)
    dims = {init.name: tuple(init.dims) for init in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in dims]
    rectangular = [
        n.name for n in weighted if len(set(dims[n.input[1]])) > 1 and len(dims[n.input[1]]) == 2
    ]
    return rectangular, len(weighted)


def quantize_int8(
    onnx_dir: str | Path,
    out_dir: str | Path,
    *,
    per_channel: bool = True,
    keep_feed_forward: bool = True,
) -> OnnxClassifier:
    """Dynamic int8 quantization (ONNX Runtime, QInt8 weights) of the fp32 graph in ``onnx_dir``.

    The weights of the MatMuls and of the embedding tables become int8 (``per_channel``:
    one scale per output column); activations are quantized on the fly, one uint8 scale
    per tensor, so no calibration data is needed. With ``keep_feed_forward`` the
    feed-forward projections stay fp32 (see ``feed_forward_matmuls``). Measured on
    e5-small fine-tuned on the zh demo (agreement of int8 with fp32 predictions on the
    test split): every MatMul int8 96.5-97.2% and -1.4 to -2.1 macro-F1 points; the
    feed-forward kept fp32 98.9-99.1% and under half a point, still 2.7x smaller than
    fp32 and ~1.2x faster at batch 32 on an AVX2 CPU.
    """
    require_onnx_stack()
    source = OnnxClassifier.load(onnx_dir)
    if source.precision != "fp32":
        raise ModelError(f"int8 quantization needs an fp32 ONNX graph, got {source.precision}")
    quantization = require_module(
        "onnxruntime.quantization", what="int8 quantization", install=ONNX_EXTRA
    )
    graph = Path(onnx_dir) / source.model_file
    kept, total = feed_forward_matmuls(graph)
    kept = kept if keep_feed_forward else []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.int8.onnx"
    try:
        with _quiet():
            quantization.quantize_dynamic(
                graph,
                target,
                weight_type=quantization.QuantType.QInt8,
                per_channel=per_channel,
                nodes_to_exclude=kept,
            )
    except Exception as exc:
        raise ModelError(f"int8 quantization of {onnx_dir} failed: {_first_line(exc)}") from exc
    note = {
        "method": "onnxruntime dynamic quantization",
        "weights": "int8 per channel" if per_channel else "int8 per tensor",
        "activations": "uint8 per tensor, on the fly",
        "fp32_matmuls": len(kept),
        "matmuls": total,
    }
    return source.derive(out_dir, model_file=target.name, precision="int8", quantization=note)


def quantize_int8_checked(
    onnx_dir: str | Path,
    out_dir: str | Path,
    *,
    texts: Sequence[str],
    min_agreement: float,
    threads: int | None = None,
    report: Report = lambda _: None,
) -> OnnxClassifier:
    """int8 with every MatMul quantized, unless that changes too many predictions.

    The fully quantized graph is compared with the fp32 graph on ``texts`` (the
    validation split, never the test split the gate judges on); when fewer than
    ``min_agreement`` of the predicted labels agree, it is redone with the feed-forward
    MatMuls kept fp32. The manifest's quantization note records the agreement of each try.
    """
    fp32 = OnnxClassifier.load(onnx_dir, threads=threads)
    reference = fp32.predict_proba(list(texts)).argmax(axis=1)
    tries: list[dict[str, Any]] = []
    model: OnnxClassifier | None = None
    for keep_feed_forward in (False, True):
        shutil.rmtree(out_dir, ignore_errors=True)
        quantize_int8(onnx_dir, out_dir, keep_feed_forward=keep_feed_forward)
        model = OnnxClassifier.load(out_dir, threads=threads)
        agreement = float(np.mean(model.predict_proba(list(texts)).argmax(axis=1) == reference))
        tries.append({"fp32_feed_forward": keep_feed_forward, "validation_agreement": agreement})
        scope = "feed-forward kept fp32" if keep_feed_forward else "every MatMul int8"
        report(f"int8 ({scope}): {agreement:.1%} of {len(texts)} validation predictions agree")
        if agreement >= min_agreement:
            break
    assert model is not None
    note = {**(model.quantization or {}), "tries": tries, "min_agreement": min_agreement}
    return fp32.derive(out_dir, model_file=model.model_file, precision="int8", quantization=note)


def convert_fp16(onnx_dir: str | Path, out_dir: str | Path) -> OnnxClassifier:
    """The fp32 graph in ``onnx_dir`` with float16 weights and arithmetic (inputs/outputs kept).

    Meant for a GPU (ONNX Runtime's CUDA provider); on a CPU it is slower than fp32.
    """
    require_onnx_stack()
    source = OnnxClassifier.load(onnx_dir)
    if source.precision != "fp32":
        raise ModelError(f"fp16 conversion needs an fp32 ONNX graph, got {source.precision}")
    onnx = require_module("onnx", what="fp16 conversion", install=ONNX_EXTRA)
    float16 = require_module(
        "onnxruntime.transformers.float16", what="fp16 conversion", install=ONNX_EXTRA
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.fp16.onnx"
    try:
        with _quiet():
            graph = onnx.load(str(Path(onnx_dir) / source.model_file))
            onnx.save(float16.convert_float_to_float16(graph, keep_io_types=True), str(target))
    except Exception as exc:
        raise ModelError(f"fp16 conversion of {onnx_dir} failed: {_first_line(exc)}") from exc
    return source.derive(out_dir, model_file=target.name, precision="fp16")


def fp16_unavailable_reason() -> str | None:
    """Why no fp16 variant is built here, or None when a GPU can serve one."""
    from aiflywheel.tasks.text_classification.models.encoding import torch_module

    if not torch_module().cuda.is_available():
        return "no GPU here (torch.cuda.is_available() is false); fp16 only pays off on a GPU"
    ort = require_module("onnxruntime", what="fp16 variants", install=ONNX_EXTRA)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
    return None


def layer_count(model_dir: str | Path) -> int:
    """Encoder layers of the transformers model saved in ``model_dir`` (from config.json)."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"cannot read the model config {path}") from None
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    raise ModelError(f"{path} names no layer count (num_hidden_layers)")


def check_keep_layers(keep: int, total: int, *, name: str = "keep_layers", error=ModelError):
    """Pruning must keep at least one layer and remove at least one."""
    allowed = f"keep between 1 and {total - 1}" if total > 1 else "it cannot be pruned"
    if keep < 1:
        raise error(
            f"{name}={keep} would remove every one of the model's {total} layers; {allowed}"
        )
    if keep >= total:
        raise error(f"{name}={keep} removes nothing: the model has {total} layers; {allowed}")


def _encoder_layers(model):
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ModelError("cannot prune this model: it has no encoder.layer list")
    return base.encoder, layers


def prune_top_layers(
    classifier,
    keep_layers: int,
    out_dir: str | Path,
    *,
    train: Dataset,
    val: Dataset,
    recovery_epochs: float = 1.0,
    max_rows: int | None = None,
    settings=None,
    work_dir: str | Path | None = None,
):
    """The classifier with only its bottom ``keep_layers`` encoder layers, saved in ``out_dir``.

    The top layers are dropped (the pooler and the classification head stay), then a
    recovery fine-tune of ``recovery_epochs`` on ``train`` (a seeded sample of at most
    ``max_rows``), early-stopped on ``val``, lets the remaining layers adapt; 0 epochs
    skips it. ``settings`` (a ``FinetuneSettings``) gives batch size, learning rate and
    seed; frozen bottom layers are capped below ``keep_layers``. Returns the pruned
    ``FinetunedClassifier`` (kind ``finetuned``, so ``load_classifier`` reads it back).
    """
    from aiflywheel.tasks.text_classification.models.finetuned import (
        FinetunedClassifier,
        FinetuneSettings,
    )

    classifier = _require_finetuned(classifier, "pruning")
    encoder, layers = _encoder_layers(classifier._model)
    check_keep_layers(keep_layers, len(layers))
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir is not None else out_dir.parent / ".prune-work"
    pruned = copy.copy(classifier)
    pruned._model = copy.deepcopy(classifier._model)
    encoder, layers = _encoder_layers(pruned._model)
    encoder.layer = type(layers)(list(layers)[:keep_layers])
    config = pruned._model.config
    config.num_hidden_layers = keep_layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:keep_layers]
    base = settings or FinetuneSettings()
    if recovery_epochs <= 0:
        pruned.settings = dataclasses.replace(base, method="finetune")
        pruned.save(out_dir)
        return FinetunedClassifier.load(out_dir)

    start_dir = work_dir / "pruned"
    pruned.save(start_dir)
    rows = list(train)
    if max_rows is not None and len(rows) > max_rows:
        rows = random.Random(base.seed).sample(rows, max_rows)
    recovered = FinetunedClassifier(
        classifier.model_name,
        str(start_dir),
        prefix=classifier.prefix,
        max_length=classifier.max_length,
        settings=dataclasses.replace(
            base,
            method="finetune",
            epochs=recovery_epochs,
            freeze_layers=min(base.freeze_layers, keep_layers - 1),
        ),
    )
    recovered.fit(
        [r.text for r in rows],
        [r.label for r in rows],
        val_texts=val.texts,
        val_labels=val.labels,
        work_dir=work_dir / "recovery",
        log_path=out_dir.parent / "recovery_log.jsonl",
    )
    if recovered.labels != classifier.labels:
        raise ModelError(
            f"the recovery sample has labels {recovered.labels}, the parent {classifier.labels}; "
            "raise compress.prune_recovery_max_rows"
        )
    recovered.save(out_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return recovered


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Measurement:
    """Size on disk and speed of one classifier on this machine (milliseconds, texts/s)."""

    size_bytes: int
    b1_p50_ms: float
    b1_p95_ms: float
    b32_p50_ms: float
    b32_p95_ms: float
    throughput: float
    texts: int
    batches: int

    def to_json(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 1e6, 3),
            "latency_ms": {
                "batch_1": {"p50": round(self.b1_p50_ms, 3), "p95": round(self.b1_p95_ms, 3)},
                "batch_32": {"p50": round(self.b32_p50_ms, 3), "p95": round(self.b32_p95_ms, 3)},
            },
            "throughput_per_s": round(self.throughput, 2),
            "timed_texts": self.texts,
            "timed_batches": self.batches,
        }


def folder_bytes(directory: str | Path) -> int:
    """Bytes of every file under ``directory``."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def measure(
    classifier,
    texts: Sequence[str],
    *,
    model_dir: str | Path,
    batch_size: int = 32,
    min_batches: int = 10,
    seed: int = 0,
) -> Measurement:
    """Size of ``model_dir``, latency per call at batch 1 and ``batch_size``, throughput.

    Each text is classified alone once (batch 1); then at least ``min_batches`` batches
    of ``batch_size`` texts drawn at random (seeded) from ``texts`` are classified, as a
    server's mixed-length batches would be. One warm-up call of each size goes first.
    """
    items = check_texts(texts)
    rng = np.random.default_rng(seed)
    n_batches = max(min_batches, math.ceil(len(items) / batch_size))
    batches = [
        [items[i] for i in rng.choice(len(items), batch_size, replace=len(items) < batch_size)]
        for _ in range(n_batches)
    ]
    classifier.predict_proba(batches[0])
    classifier.predict_proba(items[:1])
    single = []
    for text in items:
        start = time.perf_counter()
        classifier.predict_proba([text])
        single.append(time.perf_counter() - start)
    batched = []
    for batch in batches:
        start = time.perf_counter()
        classifier.predict_proba(batch)
        batched.append(time.perf_counter() - start)
    b1, b32 = np.array(single) * 1000, np.array(batched) * 1000
    return Measurement(
        size_bytes=folder_bytes(model_dir),
        b1_p50_ms=float(np.percentile(b1, 50)),
        b1_p95_ms=float(np.percentile(b1, 95)),
        b32_p50_ms=float(np.percentile(b32, 50)),
        b32_p95_ms=float(np.percentile(b32, 95)),
        throughput=batch_size * len(batched) / float(np.sum(batched)),
        texts=len(single),
        batches=len(batched),
    )


# -- the gate ------------------------------------------------------------------------------


def gate_variant(
    change_points: float,
    ci_points: Sequence[float],
    *,
    agreement: float,
    config,
    parent_version: int,
) -> dict[str, Any]:
    """The compress gate: macro-F1 drop and agreement against the parent, as checks."""
    drop = round(-change_points, 6)
    ci = f"95% CI {ci_points[0]:+.2f} to {ci_points[1]:+.2f}"
    max_drop, min_agreement = config.max_macro_f1_drop, config.min_agreement
    gate = Gate(
        [
            at_most(
                f"macro-F1 drop vs v{parent_version} (compress.max_macro_f1_drop)",
                drop,
                max_drop,
                unit="points",
                note=ci,
            ),
            at_least(
                f"agreement with v{parent_version} (compress.min_agreement)",
                round(agreement, 6),
                min_agreement,
            ),
        ]
    )
    failures = []
    if not gate.checks[0].passed:
        failures.append(
            f"macro-F1 drops {drop:.2f} points vs v{parent_version} ({ci}), more than the "
            f"allowed {max_drop:g} (compress.max_macro_f1_drop)"
        )
    if not gate.checks[1].passed:
        failures.append(
            f"it agrees with v{parent_version} on {agreement:.1%} of test rows, below "
            f"{min_agreement:.0%} (compress.min_agreement)"
        )
    reason = "; ".join(failures) or (
        f"macro-F1 {change_points:+.2f} points vs v{parent_version} ({ci}), within the "
        f"allowed drop of {max_drop:g}; agrees on {agreement:.1%}"
    )
    return {
        "passed": gate.passed,
        "reason": reason,
        "checks": gate.to_json(),
        "max_macro_f1_drop": max_drop,
    }


# -- the stage -----------------------------------------------------------------------------


@dataclass
class CompressResult:
    """The parent and its variants as measured, and where everything was written."""

    feature: str
    parent_version: int
    run_id: str
    run_dir: Path
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def compression_json(self) -> Path:
        return self.run_dir / "compression.json"

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """The variant rows by name (the parent's row left out)."""
        return {row["variant"]: row for row in self.rows if row["variant"] != "parent"}

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Column names and one row of strings per model, the parent first."""
        lines = []
        for row in self.rows:
            latency = row["latency_ms"]
            gate = row.get("gate")
            lines.append(
                [
                    row["variant"],
                    f"v{row['version']}",
                    f"{row['size_mb']:.1f}",
                    f"{latency['batch_1']['p50']:.1f}",
                    f"{latency['batch_1']['p95']:.1f}",
                    f"{latency['batch_32']['p50']:.1f}",
                    f"{latency['batch_32']['p95']:.1f}",
                    f"{row['throughput_per_s']:.0f}",
                    f"{row['macro_f1']:.4f}",
                    f"{row['macro_f1_change_points']:+.2f}",
                    f"{row['agreement']:.1%}",
                    "-" if gate is None else ("pass" if gate["passed"] else "REJECTED"),
                ]
            )
        return list(TABLE_COLUMNS), lines


@dataclass
class _Parent:
    feature: str
    version: int
    row: Any
    model_dir: Path
    run_dir: Path
    recipe: Recipe


def _parent(store: Store, feature: str, version: int | None, recipe: Recipe | None) -> _Parent:
    row = store.get_model_version(feature, version)
    model_dir = Path(row.model_path)
    if not model_dir.is_dir():
        raise ModelError(f"{feature} v{row.version}: model folder {model_dir} is missing")
    kind = read_manifest(model_dir)["kind"]
    if kind != "finetuned":
        origin = row.metrics.get("parent_version")
        hint = f"; it is already a compressed variant of v{origin}" if origin else ""
        raise ModelError(
            f"{feature} v{row.version} is a {kind!r} model ({row.base_model}/{row.method}); "
            f"compress needs a fine-tuned transformer (model.method finetune or lora){hint}"
        )
    if recipe is None:
        recipe = parse_recipe(row.recipe, origin=f"stored recipe of {feature} v{row.version}")
    elif recipe.feature != feature:
        raise RecipeError(f"the recipe declares feature {recipe.feature!r}, not {feature!r}")
    run_dir = model_dir.parent
    for needed in ("splits/train.jsonl", "splits/val.jsonl", "splits/test.jsonl", "baseline"):
        if not (run_dir / needed).exists():
            raise DataError(
                f"{feature} v{row.version}: {run_dir / needed} is missing; compress evaluates "
                "variants on the parent's frozen splits against its baseline"
            )
    return _Parent(feature, row.version, row, model_dir, run_dir, recipe)


def _method(parent: _Parent, variant: str) -> str:
    config = parent.recipe.compress
    tag = {
        "prune": f"prune{config.prune_keep_layers}",
        "distill": f"distill{config.distill_layers}",
        "distill-int8": f"distill{config.distill_layers}+int8",
    }.get(variant, variant)
    return f"{parent.row.method}+{tag}"


def unlabeled_texts(recipe: Recipe, splits: Path, *, base_dir: Path) -> list[str]:
    """Extra texts for a student from ``compress.distill_unlabeled``, prepared as training
    data was (cleaned, PII redacted), without near-duplicates of any split's rows (so the
    student never sees the validation or test texts) or of each other; a seeded sample of
    at most ``compress.distill_unlabeled_rows``."""
    from aiflywheel.data.clean import training_view
    from aiflywheel.data.ingest import ingest
    from aiflywheel.data.text_normalize import near_duplicate_key

    config = recipe.compress
    if config.distill_unlabeled is None:
        return []
    data = recipe.data.model_copy(
        update={
            "source": config.distill_unlabeled,
            "sample": None,
            "columns": recipe.data.columns.model_copy(
                update={"label": None, "meta": [], "id": None}
            ),
        }
    )
    rows = ingest(data, base_dir=base_dir, seed=recipe.seed, labeled=False).dataset
    seen = {
        near_duplicate_key(r.text)
        for name in ("train", "val", "test")
        for r in Dataset.from_jsonl(splits / f"{name}.jsonl")
    }
    texts: list[str] = []
    for record in rows:
        text = training_view(record.text, recipe.clean, recipe.pii)
        key = near_duplicate_key(text)
        if len(text) < recipe.clean.min_chars or key in seen:
            continue
        seen.add(key)
        texts.append(text)
    if len(texts) > config.distill_unlabeled_rows:
        texts = random.Random(recipe.seed).sample(texts, config.distill_unlabeled_rows)
    return texts


def _finetune_settings(recipe: Recipe, parent_method: str):
    from aiflywheel.tasks.text_classification.models.finetuned import FinetuneSettings

    t = recipe.train
    return FinetuneSettings(
        method="finetune",
        batch_size=t.batch_size,
        learning_rate=t.learning_rate if parent_method == "finetune" else None,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        early_stopping_patience=t.early_stopping_patience,
        class_weights=t.class_weights,
        freeze_embeddings=t.freeze_embeddings,
        freeze_layers=t.freeze_layers,
        seed=recipe.seed,
    )


def _copy_run_data(parent_run: Path, variant_dir: Path, recipe: Recipe) -> None:
    shutil.copytree(parent_run / "splits", variant_dir / "splits", dirs_exist_ok=True)
    if (parent_run / "dataset.jsonl").is_file():
        shutil.copy2(parent_run / "dataset.jsonl", variant_dir / "dataset.jsonl")
    write_text_atomic(
        variant_dir / "recipe.yaml",
        yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False),
    )


def _scores(model, test: Dataset) -> tuple[list[str], np.ndarray]:
    proba = model.predict_proba(test.texts)
    return [model.labels[int(i)] for i in proba.argmax(axis=1)], proba


def compress_version(
    feature: str,
    version: int | None = None,
    *,
    store: Store,
    settings: Settings,
    recipe: Recipe | None = None,
    report: Report = lambda _: None,
) -> CompressResult:
    """Build, evaluate, time, gate and register the variants of one fine-tuned version.

    ``version`` defaults to the champion, else the newest candidate; ``recipe`` defaults
    to the one the version was trained with (its ``compress`` section lists the variants).
    See the module docstring for what is written where.
    """
    from aiflywheel.tasks.text_classification.models.encoding import torch_threads

    parent = _parent(store, feature, version, recipe)
    recipe = parent.recipe
    config = recipe.compress
    if any(v in ONNX_VARIANTS for v in config.variants):
        require_onnx_stack()
    if "prune" in config.variants:
        check_keep_layers(
            config.prune_keep_layers,
            layer_count(parent.model_dir),
            name="compress.prune_keep_layers",
            error=RecipeError,
        )
    if {"distill", "distill-int8"} & set(config.variants):
        check_keep_layers(
            config.distill_layers,
            layer_count(parent.model_dir),
            name="compress.distill_layers",
            error=RecipeError,
        )
    with feature_run(
        store,
        settings.runs_dir,
        feature,
        "compress",
        work_name=".compress",
        scratch=(".export", ".distill", ".distill-export", ".prune-work"),
    ) as run:
        run_id, work_dir, final_dir = run.run_id, run.work_dir, run.final_dir
        with torch_threads(config.threads):
            rows, skipped, variants = _build_and_judge(parent, work_dir, report)
        table = {
            "feature": feature,
            "parent_version": parent.version,
            "run_id": run_id,
            "machine": {
                "cores": available_cores(),
                "threads": config.threads or available_cores(),
                "platform": platform.platform(),
                "processor": platform.machine(),
            },
            "max_macro_f1_drop": config.max_macro_f1_drop,
            "rows": rows,
            "skipped": skipped,
        }
        write_json_atomic(work_dir / "compression.json", table)
        run.commit()

        versions: dict[str, int] = {}
        for row in rows[1:]:
            name = row["variant"]
            variant_dir = final_dir / name
            metrics = variants[name]
            registered = store.register_model_version(
                feature,
                run_id=run_id,
                dataset_version_id=parent.row.dataset_version_id,
                model_path=str(variant_dir / "model"),
                base_model=parent.row.base_model,
                method=row["method"],
                metrics=_stored_metrics(metrics, row),
                recipe=recipe.model_dump(mode="json"),
                status="candidate" if row["gate"]["passed"] else "rejected",
            )
            row["version"] = registered.version
            row["status"] = registered.status
            versions[name] = registered.version
            metrics["version"] = f"v{registered.version}"
            write_evaluation(metrics, variant_dir)
            write_json_atomic(variant_dir / "gate.json", row["gate"])
            verdict = "candidate" if row["gate"]["passed"] else "rejected"
            store.record_audit(
                feature,
                action="compress",
                actor="flywheel compress",
                decision=verdict,
                reason=f"{name}: {row['gate']['reason']}",
                from_version=parent.version,
                to_version=registered.version,
                details={"variant": name, "checks": row["gate"]["checks"], "run_id": run_id},
            )
            report(f"{name}: registered as {feature} v{registered.version} ({verdict})")
        table["rows"] = rows
        write_json_atomic(final_dir / "compression.json", table)
        run.succeed(
            summary={
                "parent_version": parent.version,
                "versions": versions,
                "rejected": [r["variant"] for r in rows[1:] if not r["gate"]["passed"]],
                "skipped": [s["variant"] for s in skipped],
            },
            dataset_version_id=parent.row.dataset_version_id,
        )
    return CompressResult(
        feature=feature,
        parent_version=parent.version,
        run_id=run_id,
        run_dir=final_dir,
        rows=rows,
        skipped=skipped,
    )


def _stored_metrics(metrics: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    from aiflywheel.tasks.text_classification.train import summarize

    keep = (
        "parent_version",
        "variant",
        "precision",
        "runtime",
        "quantization",
        "layers",
        "size_bytes",
        "size_mb",
        "latency_ms",
        "throughput_per_s",
        "macro_f1_change_points",
        "macro_f1_change_ci_points",
        "agreement",
        "max_probability_diff",
        "parent",
        "gate",
    )
    return {**summarize(metrics), **{key: row[key] for key in keep}}


def _build_and_judge(parent: _Parent, work_dir: Path, report: Report):
    """Rows for compression.json (parent first), skipped variants, and each variant's metrics."""
    from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline
    from aiflywheel.tasks.text_classification.models.finetuned import FinetunedClassifier

    recipe, config = parent.recipe, parent.recipe.compress
    splits = parent.run_dir / "splits"
    test = Dataset.from_jsonl(splits / "test.jsonl")
    if not len(test):
        raise DataError(f"{splits / 'test.jsonl'} is empty; compress needs test rows to judge by")
    baseline = TfidfBaseline.load(parent.run_dir / "baseline")
    parent_metrics_file = parent.run_dir / "metrics.json"
    parent_metrics = (
        json.loads(parent_metrics_file.read_text(encoding="utf-8"))
        if parent_metrics_file.is_file()
        else {}
    )
    baseline_seconds = float(parent_metrics.get("baseline", {}).get("train_seconds", 0.0))

    report(
        f"loading {parent.feature} v{parent.version} ({parent.row.base_model}/{parent.row.method})"
    )
    source = FinetunedClassifier.load(parent.model_dir)
    y_true = [r.label for r in test]
    labels = sorted(set(source.labels) | set(baseline.labels) | set(y_true))
    parent_pred, parent_proba = _scores(source, test)
    timed = random.Random(recipe.seed).sample(test.texts, min(config.latency_texts, len(test)))
    report(f"timing v{parent.version} (torch) on {len(timed)} test texts")
    parent_speed = measure(source, timed, model_dir=parent.model_dir, seed=recipe.seed).to_json()
    parent_layers = layer_count(parent.model_dir)
    parent_f1 = classification_metrics(y_true, parent_pred, None, labels)["macro_f1"]
    rows: list[dict[str, Any]] = [
        {
            "variant": "parent",
            "version": parent.version,
            "method": parent.row.method,
            "status": parent.row.status,
            "precision": "fp32",
            "runtime": "torch",
            "layers": parent_layers,
            **parent_speed,
            "macro_f1": parent_f1,
            "macro_f1_change_points": 0.0,
            "macro_f1_change_ci_points": [0.0, 0.0],
            "agreement": 1.0,
            "max_probability_diff": 0.0,
            "gate": None,
        }
    ]
    skipped: list[dict[str, str]] = []
    variants: dict[str, dict[str, Any]] = {}

    train = Dataset.from_jsonl(splits / "train.jsonl")
    val = Dataset.from_jsonl(splits / "val.jsonl")
    # int8 is checked against fp32 on validation texts: the test split only judges.
    agreement_texts = val.texts or random.Random(recipe.seed).sample(
        train.texts, min(200, len(train))
    )
    exported: Path | None = None
    student = None
    for name in config.variants:
        variant_dir = work_dir / name
        model_dir = variant_dir / "model"
        started = time.perf_counter()
        if name in ONNX_VARIANTS and exported is None:
            exported = (work_dir / ("onnx" if "onnx" in config.variants else ".export")) / "model"
            report(f"exporting v{parent.version} to ONNX (opset {OPSET})")
            export_onnx(source, exported, texts=test.texts[:8], threads=config.threads)
        if name == "onnx":
            model = OnnxClassifier.load(model_dir, threads=config.threads)
        elif name == "int8":
            report("quantizing the ONNX graph to int8 (dynamic, ONNX Runtime)")
            model = quantize_int8_checked(
                exported,
                model_dir,
                texts=agreement_texts,
                min_agreement=config.int8_min_agreement,
                threads=config.threads,
                report=report,
            )
        elif name == "fp16":
            reason = fp16_unavailable_reason()
            if reason is not None:
                report(f"fp16 skipped: {reason}")
                skipped.append({"variant": "fp16", "reason": reason})
                continue
            convert_fp16(exported, model_dir)
            model = OnnxClassifier.load(model_dir, threads=config.threads)
        elif name in ("distill", "distill-int8"):
            if student is None:
                where = "distill" if "distill" in config.variants else ".distill"
                extra = unlabeled_texts(recipe, splits, base_dir=Path.cwd())
                report(
                    f"distilling v{parent.version} into a {config.distill_layers}-layer student "
                    f"on {len(train)} training rows and {len(extra)} unlabeled texts"
                )
                student = distill_student(
                    source,
                    work_dir / where / "model",
                    train=train,
                    val=val,
                    settings=DistillSettings(
                        keep_layers=config.distill_layers,
                        epochs=config.distill_epochs,
                        batch_size=recipe.train.batch_size,
                        learning_rate=config.distill_learning_rate,
                        temperature=config.distill_temperature,
                        soft_weight=config.distill_soft_weight,
                        seed=recipe.seed,
                        unlabeled_texts=extra,
                    ),
                    report=report,
                )
            model = student
            if name == "distill-int8":
                student_onnx = work_dir / ".distill-export" / "model"
                report("exporting the student to ONNX and quantizing it to int8")
                export_onnx(student, student_onnx, texts=test.texts[:8], threads=config.threads)
                model = quantize_int8_checked(
                    student_onnx,
                    model_dir,
                    texts=agreement_texts,
                    min_agreement=config.int8_min_agreement,
                    threads=config.threads,
                    report=report,
                )
        else:
            report(
                f"pruning v{parent.version} to its bottom {config.prune_keep_layers} layers, "
                f"then {config.prune_recovery_epochs:g} epoch(s) of recovery fine-tuning"
            )
            model = prune_top_layers(
                source,
                config.prune_keep_layers,
                model_dir,
                train=train,
                val=val,
                recovery_epochs=config.prune_recovery_epochs,
                max_rows=config.prune_recovery_max_rows,
                settings=_finetune_settings(recipe, parent.row.method),
                work_dir=work_dir / ".prune-work",
            )
        build_seconds = time.perf_counter() - started
        # Judge the variant as loaded from its folder: that is what registers and serves.
        model = reload_verified(
            model,
            model_dir,
            test.texts,
            what=f"{name} variant",
            seed=recipe.seed,
            loaded=(
                OnnxClassifier.load(model_dir, threads=config.threads)
                if isinstance(model, OnnxClassifier)
                else None
            ),
        )
        method = _method(parent, name)
        report(f"evaluating {name} on {len(test)} test rows")
        metrics = evaluate_against_baseline(
            model,
            baseline,
            test,
            recipe.evaluate,
            feature=parent.feature,
            model_name=f"{recipe.model.name}/{method}",
            model_seconds=build_seconds,
            baseline_seconds=baseline_seconds,
            seed=recipe.seed,
        )
        predicted, proba = _scores(model, test)
        change = paired_bootstrap(
            y_true,
            predicted,
            parent_pred,
            labels,
            n_resamples=recipe.evaluate.bootstrap_resamples,
            seed=recipe.seed,
        )
        report(f"timing {name} on {len(timed)} test texts")
        speed = measure(model, timed, model_dir=model_dir, seed=recipe.seed).to_json()
        change_points = change["diff"] * 100
        ci_points = [change["ci"][0] * 100, change["ci"][1] * 100]
        agreement = float(np.mean([a == b for a, b in zip(predicted, parent_pred, strict=True)]))
        gate = gate_variant(
            change_points,
            ci_points,
            agreement=agreement,
            config=config,
            parent_version=parent.version,
        )
        row = {
            "variant": name,
            "version": None,
            "method": method,
            "status": "candidate" if gate["passed"] else "rejected",
            "precision": getattr(model, "precision", "fp32"),
            "runtime": "onnxruntime" if isinstance(model, OnnxClassifier) else "torch",
            "quantization": getattr(model, "quantization", None),
            "layers": {
                "prune": config.prune_keep_layers,
                "distill": config.distill_layers,
                "distill-int8": config.distill_layers,
            }.get(name, parent_layers),
            **speed,
            "macro_f1": metrics["model"]["metrics"]["macro_f1"],
            "macro_f1_change_points": change_points,
            "macro_f1_change_ci_points": ci_points,
            "agreement": agreement,
            "max_probability_diff": float(np.abs(proba - parent_proba).max()),
            "build_seconds": round(build_seconds, 2),
            "parent_version": parent.version,
            "parent": {
                key: parent_speed[key]
                for key in ("size_bytes", "size_mb", "latency_ms", "throughput_per_s")
            }
            | {"macro_f1": parent_f1},
            "gate": gate,
        }
        report(
            f"{name}: {'passes' if gate['passed'] else 'REJECTED by'} the gate: {gate['reason']}"
        )
        metrics["compression"] = {k: v for k, v in row.items() if k not in ("version", "status")}
        metrics["method_reason"] = f"{name} variant of v{parent.version}"
        for key in ("dataset_version", "train_rows"):
            if key in parent_metrics:
                metrics[key] = parent_metrics[key]
        _copy_run_data(parent.run_dir, variant_dir, recipe)
        write_evaluation(metrics, variant_dir)
        rows.append(row)
        variants[name] = metrics
    return rows, skipped, variants


__all__ = [
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
