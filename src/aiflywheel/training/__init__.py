"""The HF Trainer setup shared by every fine-tuning task (``aiflywheel.training.trainer``).

Imported only when a model is trained: it loads torch and transformers.
"""
