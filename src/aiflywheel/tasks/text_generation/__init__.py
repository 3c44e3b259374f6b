"""Text generation (recipe task ``text_generation``): prompt -> response pairs, chat
transcripts or plain texts; a packaged small LM (SmolLM2-135M-Instruct, Gemma-3-270M) tuned
with LoRA or fully; evaluated against the untuned base and a nearest-neighbour response;
``/v1/completions`` and ``/v1/chat/completions``; feedback (a choice among n, a thumb, an
edit) retrains with DPO and SFT behind a preference gate."""

from aiflywheel.tasks.text_generation.task import TASK

__all__ = ["TASK"]
