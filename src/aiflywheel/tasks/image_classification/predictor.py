"""A served image version: the classifier plus the recipe's input settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aiflywheel.tasks.image_classification.config import ImageConfig


@dataclass
class ImagePredictor:
    """``predict_proba``/``predict`` of the loaded model; ``config`` says how to decode."""

    model: Any
    config: ImageConfig

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    def decode(self, data: bytes):
        from aiflywheel.tasks.image_classification.images import decode_image

        c = self.config
        return decode_image(
            data,
            size=c.size,
            channels=c.channels,
            max_bytes=c.limits.max_bytes,
            max_pixels=c.limits.max_pixels,
            min_side=c.limits.min_side,
            wrong_mode=c.wrong_mode,
        )

    def predict_proba(self, images: Any) -> np.ndarray:
        return self.model.predict_proba(images)

    def predict(self, images: Any) -> list:
        """Images as arrays, or encoded bytes (decoded like a request)."""
        if len(images) and isinstance(images[0], bytes):
            images = [self.decode(b).pixels for b in images]
        return self.model.predict(images)

    def blank(self) -> np.ndarray:
        return np.full((1, self.config.size, self.config.size, self.config.channels), 128, np.uint8)
