"""A tiny image world for tests: 8x8 grayscale pictures of two labels.

``top``: the upper half is bright; ``bottom``: the lower half is bright (with noise).
``turned=True`` draws them as a camera turned by 90 degrees sees them (the bright half
on the left for ``top``, on the right for ``bottom``): a style a model trained on the
plain pictures never saw, which users then correct.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 8
LABELS = ("bottom", "top")


def picture(label: str, rng: np.random.Generator, *, turned: bool = False) -> np.ndarray:
    image = rng.integers(0, 60, (SIZE, SIZE)).astype(np.int32)
    rows = slice(0, SIZE // 2) if label == "top" else slice(SIZE // 2, SIZE)
    image[rows] += 170
    if turned:
        image = np.rot90(image)
    return np.clip(image, 0, 255).astype(np.uint8)


def png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def make_folder(root: Path, per_label: int = 20, seed: int = 0) -> Path:
    """``root/<label>/<n>.png``: ``per_label`` distinct pictures per label."""
    rng = np.random.default_rng(seed)
    for label in LABELS:
        (root / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_label):
            (root / label / f"{n}.png").write_bytes(png(picture(label, rng)))
    return root


def recipe_text(
    source: str, feature: str = "shapes", epochs: int = 12, augment: str = "", **image: object
) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in image.items())
    return (
        f"feature: {feature}\n"
        "task: image_classification\n"
        "seed: 1\n"
        "image:\n"
        f"  source: {source}\n"
        f"  size: {SIZE}\n"
        "  width: 8\n"
        "  baseline_size: 4\n"
        "  learning_rate: 0.01\n"
        f"{extra}"
        "split: {train: 0.6, val: 0.2, test: 0.2}\n"
        f"train: {{epochs: {epochs}, batch_size: 8, threads: 1{augment}}}\n"
        "evaluate: {bootstrap_resamples: 200, min_slice_rows: 5, explain_mistakes: 3}\n"
        "gate: {feedback_holdout: 0.5, min_slice_rows: 5}\n".replace(", min_slice_rows: 5}", "}")
    )
