"""Kind ``onnx``: a fine-tuned classifier exported to ONNX and run by ONNX Runtime.

``aiflywheel.compress`` writes the folder: the graph (``model.onnx``, ``model.int8.onnx``
or ``model.fp16.onnx``), the tokenizer as ``tokenizer.json`` and ``classifier.json``
(labels, text prefix, max_length, padding). Predicting needs onnxruntime, tokenizers and
numpy only: loading never imports torch or transformers, so a serving process stays
small and starts fast.

Texts are tokenized once, grouped into length buckets (``encoding.length_buckets``:
a batch closes at ``batch_size`` texts or when the next text is much longer than its
shortest), each bucket padded to its own longest text (dynamic padding) and truncated
to the parent's ``max_length``. The session uses one intra-op
thread per available core (or ``threads``) with every graph optimization on; the first
prediction opens it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import ModelError, require_module
from aiflywheel.tasks.text_classification.models.base import (
    ClassifierBase,
    check_texts,
    read_manifest,
)
from aiflywheel.tasks.text_classification.models.encoding import length_buckets

ONNX_EXTRA = "pip install 'aiflywheel[onnx]'"
TOKENIZER_FILE = "tokenizer.json"
PRECISIONS = ("fp32", "int8", "fp16")


def onnxruntime_module():
    return require_module("onnxruntime", what="ONNX models", install=ONNX_EXTRA)


def tokenizers_module():
    return require_module("tokenizers", what="ONNX models", install=ONNX_EXTRA)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


class OnnxClassifier(ClassifierBase):
    """Class probabilities from an ONNX graph of a sequence classifier (softmax of its logits).

    ``padding`` holds the tokenizer's ``pad_id``, ``pad_token``, ``pad_type_id`` and
    ``direction``; ``threads`` is the session's intra-op thread count (default: every
    available core); ``providers`` the ONNX Runtime execution providers (default: CUDA
    for fp32/fp16 graphs when onnxruntime has it, else CPU).
    """

    kind = "onnx"

    def __init__(
        self,
        model_name: str = "",
        *,
        labels: Sequence[str] = (),
        prefix: str = "",
        max_length: int | None = None,
        precision: str = "fp32",
        model_file: str = "model.onnx",
        padding: dict[str, Any] | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        providers: Sequence[str] | None = None,
        quantization: dict[str, Any] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if threads is not None and threads < 1:
            raise ModelError(f"threads must be at least 1, got {threads}")
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        self.model_name = model_name
        self.labels = list(labels)
        self.prefix = prefix
        self.max_length = max_length
        self.precision = precision
        self.model_file = model_file
        self.padding = dict(padding or {})
        self.threads = threads
        self.batch_size = batch_size
        self.providers = list(providers) if providers else None
        self.quantization = dict(quantization) if quantization else None
        self.directory: Path | None = None
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()

    # -- files --------------------------------------------------------------------------
    def _model_files(self, directory: Path) -> list[Path]:
        """The graph and its external-data file, if the graph was saved with one."""
        graph = directory / self.model_file
        return [graph, *sorted(directory.glob(self.model_file + ".data"))]

    def save(self, directory: str | Path) -> None:
        """Write ``classifier.json`` next to the graph and ``tokenizer.json``.

        A loaded classifier copies its graph and tokenizer into ``directory``; a new one
        (``directory`` unset) expects the exporter to have written them there already.
        """
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        source = self.directory
        if source is not None and source.resolve() != directory.resolve():
            for path in [*self._model_files(source), source / TOKENIZER_FILE]:
                shutil.copy2(path, directory / path.name)
        for path in (directory / self.model_file, directory / TOKENIZER_FILE):
            if not path.is_file():
                raise ModelError(f"cannot save an ONNX classifier into {directory}: no {path.name}")
        self._write_manifest(
            directory,
            model_name=self.model_name,
            prefix=self.prefix,
            max_length=self.max_length,
            precision=self.precision,
            model_file=self.model_file,
            padding=self.padding,
            quantization=self.quantization,
        )
        self.directory = directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> OnnxClassifier:
        """The classifier in ``directory``; needs onnxruntime and tokenizers, never torch."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest.get("kind") != cls.kind:
            raise ModelError(f"{directory} holds a {manifest.get('kind')!r} model, not an ONNX one")
        onnxruntime_module()
        tokenizers_module()
        model = cls(
            manifest.get("model_name", ""),
            labels=manifest["labels"],
            prefix=manifest.get("prefix", ""),
            max_length=manifest.get("max_length"),
            precision=manifest.get("precision", "fp32"),
            model_file=manifest.get("model_file", "model.onnx"),
            padding=manifest.get("padding"),
            threads=threads,
            providers=providers,
            quantization=manifest.get("quantization"),
        )
        for path in (directory / model.model_file, directory / TOKENIZER_FILE):
            if not path.is_file():
                raise ModelError(f"{directory} is not a complete ONNX classifier: no {path.name}")
        model.directory = directory
        return model

    def derive(
        self,
        directory: str | Path,
        *,
        model_file: str,
        precision: str,
        quantization: dict[str, Any] | None = None,
    ) -> OnnxClassifier:
        """This classifier with another graph (e.g. quantized) already written to ``directory``.

        Copies ``tokenizer.json`` there and writes the manifest (with ``quantization``, a
        note of how the graph was made); returns the new classifier.
        """
        self._require_fitted()
        if self.directory is None:
            raise ModelError("derive needs a saved ONNX classifier (load one first)")
        directory = Path(directory)
        if self.directory.resolve() != directory.resolve():
            shutil.copy2(self.directory / TOKENIZER_FILE, directory / TOKENIZER_FILE)
        derived = OnnxClassifier(
            self.model_name,
            labels=self.labels,
            prefix=self.prefix,
            max_length=self.max_length,
            precision=precision,
            model_file=model_file,
            padding=self.padding,
            threads=self.threads,
            batch_size=self.batch_size,
            quantization=quantization,
        )
        derived.save(directory)
        return derived

    # -- runtime -----------------------------------------------------------------------
    def _default_providers(self, ort) -> list[str]:
        available = ort.get_available_providers()
        if self.precision != "int8" and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _ready(self):
        """The tokenizer and the session, created once (thread-safe)."""
        if self._session is not None:
            return self._tokenizer, self._session
        with self._lock:
            if self._session is None:
                if self.directory is None:
                    raise ModelError("this ONNX classifier has no files yet: save or load it first")
                ort = onnxruntime_module()
                tokenizer = tokenizers_module().Tokenizer.from_file(
                    str(self.directory / TOKENIZER_FILE)
                )
                if self.max_length:
                    tokenizer.enable_truncation(max_length=int(self.max_length))
                else:
                    tokenizer.no_truncation()
                tokenizer.no_padding()  # each length bucket is padded in _feed
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.intra_op_num_threads = self.threads or available_cores()
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.log_severity_level = 3
                try:
                    session = ort.InferenceSession(
                        str(self.directory / self.model_file),
                        sess_options=options,
                        providers=self.providers or self._default_providers(ort),
                    )
                except Exception as exc:  # onnxruntime raises its own exception types
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ModelError(
                        f"cannot open {self.directory / self.model_file}: {first}"
                    ) from None
                self._input_names = [i.name for i in session.get_inputs()]
                self._output_name = session.get_outputs()[0].name
                self._tokenizer = tokenizer
                self._session = session
        return self._tokenizer, self._session

    def _feed(self, encodings) -> dict[str, np.ndarray]:
        """The graph's inputs for unpadded encodings, padded to the longest of them."""
        width = max(len(e.ids) for e in encodings)
        pad = self.padding
        columns = {
            "input_ids": np.full((len(encodings), width), int(pad.get("pad_id", 0)), np.int64),
            "attention_mask": np.zeros((len(encodings), width), np.int64),
            "token_type_ids": np.full(
                (len(encodings), width), int(pad.get("pad_type_id", 0)), np.int64
            ),
        }
        left = pad.get("direction", "right") == "left"
        for row, e in enumerate(encodings):
            n = len(e.ids)
            span = slice(width - n, width) if left else slice(0, n)
            columns["input_ids"][row, span] = e.ids
            columns["attention_mask"][row, span] = e.attention_mask
            columns["token_type_ids"][row, span] = e.type_ids
        feed = {}
        for name in self._input_names:
            if name not in columns:
                raise ModelError(f"the ONNX graph wants an input {name!r} this classifier lacks")
            feed[name] = columns[name]
        return feed

    def predict_proba(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Probabilities, one row per text, columns in ``labels`` order."""
        self._require_fitted()
        items = check_texts(texts)
        tokenizer, session = self._ready()
        out = np.zeros((len(items), len(self.labels)), dtype=np.float32)
        encodings = tokenizer.encode_batch([self.prefix + text for text in items])
        lengths = [len(e.ids) for e in encodings]
        for batch in length_buckets(lengths, batch_size or self.batch_size):
            feed = self._feed([encodings[i] for i in batch])
            out[batch] = softmax(session.run([self._output_name], feed)[0])
        return out


__all__ = ["ONNX_EXTRA", "OnnxClassifier", "available_cores"]
