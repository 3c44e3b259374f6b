"""Text classification (recipe task ``text_classification``): a TF-IDF baseline, a
frozen-encoder head, fine-tuned encoders and ONNX variants; train, evaluate, explain,
retrain."""

from aiflywheel.tasks.text_classification.task import TASK

__all__ = ["TASK"]
