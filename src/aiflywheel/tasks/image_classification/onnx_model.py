"""The image classifier exported to ONNX (fp32) or quantized to int8, run by ONNX Runtime.

int8 is static quantization (QDQ, per-channel weights) calibrated on training images:
the activation ranges of a convolutional network come from real inputs, which dynamic
quantization (weights only, ranges per batch) does not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.files import write_json_atomic
from aiflywheel.tasks.image_classification.models import (
    as_batch,
    predictions,
    read_manifest,
)

MODEL_FILE = "model.onnx"


def export_onnx(model, folder: Path) -> Path:
    """Write ``model`` (an ``ImageClassifier``) as ONNX with a dynamic batch axis."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, model.channels, model.size, model.size)
    model.network.eval()
    torch.onnx.export(
        model.network,
        (dummy,),
        str(folder / MODEL_FILE),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    _write_manifest(model, folder, precision="fp32")
    return folder


def quantize_int8(fp32_folder: Path, folder: Path, calibration: np.ndarray) -> Path:
    """Static int8 (QDQ) quantization of an exported model, calibrated on ``calibration``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [
                    {"pixels": _inputs(calibration[i : i + 32])}
                    for i in range(0, len(calibration), 32)
                ]
            )

        def get_next(self):
            return next(self.batches, None)

    folder.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(fp32_folder / MODEL_FILE),
        str(folder / MODEL_FILE),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    manifest = read_manifest(fp32_folder)
    manifest["precision"] = "int8"
    manifest["calibration_images"] = len(calibration)
    write_json_atomic(folder / "manifest.json", manifest)
    return folder


def _inputs(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def _write_manifest(model, folder: Path, *, precision: str) -> None:
    write_json_atomic(
        folder / "manifest.json",
        {
            "kind": OnnxImageClassifier.kind,
            "labels": model.labels,
            "architecture": model.architecture,
            "size": model.size,
            "channels": model.channels,
            "width": model.width,
            "precision": precision,
        },
    )


class OnnxImageClassifier:
    kind = "image-onnx"

    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.labels = list(manifest["labels"])
        self.size = manifest["size"]
        self.channels = manifest["channels"]
        self.precision = manifest.get("precision", "fp32")
        self.name = f"{manifest['architecture']}-w{manifest['width']}-onnx-{self.precision}"

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> OnnxImageClassifier:
        folder = Path(folder)
        return cls(folder, read_manifest(folder), threads)

    def logits(self, images: Any) -> np.ndarray:
        batch = as_batch(images)
        if not len(batch):
            return np.zeros((0, len(self.labels)), np.float32)
        return self.session.run(["logits"], {"pixels": _inputs(batch)})[0]

    def predict_proba(self, images: Any) -> np.ndarray:
        logits = self.logits(images)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, images: Any) -> list:
        return predictions(self.labels, self.predict_proba(images))


__all__ = ["OnnxImageClassifier", "export_onnx", "quantize_int8"]
