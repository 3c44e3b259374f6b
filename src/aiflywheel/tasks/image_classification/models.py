"""Image classifiers in plain PyTorch: the MNIST example's small CNN, a compact ResNet,
and the pixel baseline (logistic regression on downscaled pixels).

Every classifier has ``labels``, ``predict_proba(images)`` (images: uint8 (N,H,W,C) or a
list of (H,W,C) arrays; columns in ``labels`` order), ``predict`` and ``save``/``load``
(``model.safetensors`` + ``manifest.json``; no pickle).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import ModelError
from aiflywheel.files import write_arrays_atomic, write_json_atomic


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]


def as_batch(images: Any) -> np.ndarray:
    """uint8 (N,H,W,C) from an array or a list of (H,W,C) arrays."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return images
    return np.stack([np.asarray(x) for x in images]) if len(images) else np.zeros((0, 1, 1, 1))


def predictions(labels: Sequence[str], proba: np.ndarray) -> list[Prediction]:
    return [
        Prediction(
            labels[int(row.argmax())],
            {name: round(float(p), 6) for name, p in zip(labels, row, strict=True)},
        )
        for row in proba
    ]


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise ModelError(f"{folder} has no manifest.json; not a saved image classifier")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- networks


def build_network(architecture: str, channels: int, n_labels: int, width: int, size: int):
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        """Keras' MNIST example: conv-conv-pool-dropout-flatten-dense-dropout-dense (the
        dense layer sized for ``size``, so the network exports to ONNX as it is)."""

        def __init__(self) -> None:
            super().__init__()
            side = size // 2
            self.body = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Dropout(0.25),
                nn.Flatten(),
                nn.Linear(2 * width * side * side, 4 * width),
                nn.ReLU(),
            )
            self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(4 * width, n_labels))

        def features(self, x):
            return self.body(x)

        def forward(self, x):
            return self.head(self.body(x))

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.skip = (
                nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                if stride != 1 or c_in != c_out
                else nn.Identity()
            )

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))

    class CompactResNet(nn.Module):
        """Stem + three stages of one basic block (width, 2x, 4x) + global pooling."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
            self.stages = nn.Sequential(
                Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2)
            )
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(4 * width, n_labels)

        def features(self, x):
            return self.pool(self.stages(self.stem(x)))

        def forward(self, x):
            return self.head(self.features(x))

    if architecture == "cnn":
        return SmallCNN()
    if architecture == "resnet":
        return CompactResNet()
    raise ModelError(f"image architecture must be cnn or resnet, got {architecture!r}")


def to_tensor(batch: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div(255.0)


def augment_batch(x, augment, generator):
    """Random flips, pad-and-crop and small rotations of a float batch (N,C,H,W)."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    if augment.flip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if augment.rotation or augment.crop:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(augment.rotation)
        size = x.shape[-1]
        shift = (
            (
                torch.randint(-augment.crop, augment.crop + 1, (n, 2), generator=generator)
                * 2.0
                / size
            )
            if augment.crop
            else torch.zeros(n, 2)
        )
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return x


class ImageClassifier:
    """A CNN or compact ResNet on (size x size x channels) uint8 images."""

    kind = "image-torch"

    def __init__(
        self,
        labels: Sequence[str],
        *,
        architecture: str = "cnn",
        size: int = 28,
        channels: int = 1,
        width: int = 32,
    ) -> None:
        self.labels = list(labels)
        self.architecture = architecture
        self.size = size
        self.channels = channels
        self.width = width
        self.network = build_network(architecture, channels, len(self.labels), width, size)
        self.history: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return f"{self.architecture}-w{self.width}"

    def fit(
        self,
        x: np.ndarray,
        y: Sequence[str],
        *,
        val_x: np.ndarray,
        val_y: Sequence[str],
        epochs: float,
        batch_size: int,
        learning_rate: float,
        augment=None,
        seed: int = 42,
        report: Callable[[str], None] = lambda _: None,
    ) -> ImageClassifier:
        """Adam on cross-entropy; keeps the weights of the epoch with the best val macro-F1."""
        import torch
        import torch.nn.functional as F

        from aiflywheel.metrics.classification import classification_metrics

        torch.manual_seed(seed)
        random.seed(seed)
        generator = torch.Generator().manual_seed(seed)
        index = {label: i for i, label in enumerate(self.labels)}
        targets = torch.tensor([index[v] for v in y], dtype=torch.long)
        counts = torch.bincount(targets, minlength=len(self.labels)).float().clamp(min=1)
        weights = counts.sum() / (len(self.labels) * counts)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=learning_rate)
        total_epochs = max(1, math.ceil(epochs))
        best, best_state = -1.0, None
        for epoch in range(total_epochs):
            started = time.perf_counter()
            self.network.train()
            order = torch.randperm(len(targets), generator=generator)
            share = epochs - epoch if epoch == total_epochs - 1 and epochs % 1 else 1.0
            order = order[: max(1, int(len(order) * share))]
            losses = []
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size].numpy()
                inputs = to_tensor(x[batch])
                if augment is not None:
                    inputs = augment_batch(inputs, augment, generator)
                loss = F.cross_entropy(self.network(inputs), targets[batch], weight=weights)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            val_pred = [p.label for p in self.predict(val_x)]
            score = classification_metrics(list(val_y), val_pred, None, self.labels)["macro_f1"]
            self.history.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(np.mean(losses)),
                    "val_macro_f1": score,
                    "seconds": time.perf_counter() - started,
                }
            )
            report(
                f"epoch {epoch + 1}/{total_epochs}: loss {np.mean(losses):.3f}, "
                f"val macro-F1 {score:.3f} ({time.perf_counter() - started:.1f} s)"
            )
            if score >= best:  # a tie goes to the later (better-fitted) epoch
                best = score
                best_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        if best_state is not None:
            self.network.load_state_dict(best_state)
        self.network.eval()
        return self

    def _logits(self, batch: np.ndarray, chunk: int = 512) -> np.ndarray:
        import torch

        self.network.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(batch), chunk):
                out.append(self.network(to_tensor(batch[start : start + chunk])).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def logits(self, images: Any) -> np.ndarray:
        return self._logits(as_batch(images))

    def predict_proba(self, images: Any) -> np.ndarray:
        logits = self._logits(as_batch(images))
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, images: Any) -> list[Prediction]:
        return predictions(self.labels, self.predict_proba(images))

    def features(self, images: np.ndarray) -> np.ndarray:
        """The penultimate layer (what the GAN's feature distance is computed on)."""
        import torch

        self.network.eval()
        with torch.inference_mode():
            return np.concatenate(
                [
                    self.network.features(to_tensor(images[s : s + 512])).numpy()
                    for s in range(0, len(images), 512)
                ]
            )

    def manifest(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": self.labels,
            "architecture": self.architecture,
            "size": self.size,
            "channels": self.channels,
            "width": self.width,
            "history": self.history,
        }

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        state = {k: v.detach().cpu().numpy() for k, v in self.network.state_dict().items()}
        write_arrays_atomic(folder / "model.safetensors", state)
        write_json_atomic(folder / "manifest.json", self.manifest())

    @classmethod
    def load(cls, folder: Path) -> ImageClassifier:
        import torch
        from safetensors.torch import load_file

        manifest = read_manifest(folder)
        model = cls(
            manifest["labels"],
            architecture=manifest["architecture"],
            size=manifest["size"],
            channels=manifest["channels"],
            width=manifest["width"],
        )
        state = load_file(str(Path(folder) / "model.safetensors"))
        model.network.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        model.network.eval()
        model.history = manifest.get("history", [])
        return model


class PixelBaseline:
    """Logistic regression on pixels downscaled to ``side x side`` (grayscale)."""

    kind = "image-pixel-logreg"

    def __init__(self, labels: Sequence[str] = (), *, side: int = 14, seed: int = 42) -> None:
        self.labels = list(labels)
        self.side = side
        self.seed = seed
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None

    name = "pixel-logreg"

    def _x(self, images: Any) -> np.ndarray:
        from PIL import Image

        batch = as_batch(images)
        gray = batch.mean(axis=3) if batch.shape[3] > 1 else batch[..., 0].astype(float)
        out = np.empty((len(batch), self.side * self.side), np.float32)
        for i, image in enumerate(gray):
            small = Image.fromarray(image.astype(np.uint8)).resize(
                (self.side, self.side), Image.Resampling.BILINEAR
            )
            out[i] = np.asarray(small, np.float32).ravel() / 255.0
        return out

    def fit(self, x: np.ndarray, y: Sequence[str]) -> PixelBaseline:
        from sklearn.linear_model import LogisticRegression

        self.labels = sorted(set(y)) if not self.labels else self.labels
        index = {label: i for i, label in enumerate(self.labels)}
        model = LogisticRegression(max_iter=300, C=1.0, random_state=self.seed)
        model.fit(self._x(x), [index[v] for v in y])
        coef = np.zeros((len(self.labels), self.side * self.side), np.float32)
        intercept = np.zeros(len(self.labels), np.float32)
        classes = list(model.classes_)
        if len(classes) == 2 and model.coef_.shape[0] == 1:  # binary: one row for class 1
            coef[classes[1]], intercept[classes[1]] = model.coef_[0], model.intercept_[0]
        else:
            for row, c in enumerate(classes):
                coef[c], intercept[c] = model.coef_[row], model.intercept_[row]
        self.coef, self.intercept = coef, intercept
        return self

    def predict_proba(self, images: Any) -> np.ndarray:
        if self.coef is None or self.intercept is None:
            raise ModelError("the pixel baseline is not trained")
        logits = self._x(images) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, images: Any) -> list[Prediction]:
        return predictions(self.labels, self.predict_proba(images))

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        write_arrays_atomic(
            folder / "model.safetensors", {"coef": self.coef, "intercept": self.intercept}
        )
        write_json_atomic(
            folder / "manifest.json",
            {"kind": self.kind, "labels": self.labels, "side": self.side, "seed": self.seed},
        )

    @classmethod
    def load(cls, folder: Path) -> PixelBaseline:
        from safetensors.numpy import load_file

        manifest = read_manifest(folder)
        model = cls(manifest["labels"], side=manifest["side"], seed=manifest["seed"])
        arrays = load_file(str(Path(folder) / "model.safetensors"))
        model.coef, model.intercept = arrays["coef"], arrays["intercept"]
        return model


def load_image_model(folder: str | Path):
    """Any saved image classifier (torch, ONNX, pixel baseline) by its manifest's kind."""
    folder = Path(folder)
    kind = read_manifest(folder).get("kind")
    if kind == ImageClassifier.kind:
        return ImageClassifier.load(folder)
    if kind == PixelBaseline.kind:
        return PixelBaseline.load(folder)
    if kind == "image-onnx":
        from aiflywheel.tasks.image_classification.onnx_model import OnnxImageClassifier

        return OnnxImageClassifier.load(folder)
    raise ModelError(f"{folder}: unknown image model kind {kind!r}")
