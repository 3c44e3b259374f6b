"""Text to text (recipe task ``text_to_text``): source -> target pairs from CSV/TSV/JSONL
(translation, rewriting, normalization); the seeds' LSTM encoder-decoder with attention,
trained from scratch, against copy and dictionary baselines on chrF/BLEU with CIs;
``POST /v1/transform``; corrected outputs retrain it behind a chrF gate."""

from aiflywheel.tasks.text_to_text.task import TASK

__all__ = ["TASK"]
