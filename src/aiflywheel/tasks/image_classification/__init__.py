"""Image classification (recipe task ``image_classification``): images from a folder per
label, a CSV/JSONL of paths or a zip, sanitized and deduplicated; the MNIST example's small
CNN or a compact ResNet against a pixel logistic-regression baseline; ``POST /v1/predict``;
retrain from corrected predictions; GAN augmentation judged by the gate."""

from aiflywheel.tasks.image_classification.task import TASK

__all__ = ["TASK"]
