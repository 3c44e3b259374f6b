"""The customer-service assistant (recipe task ``assistant``).

A knowledge base (FAQ files and documents) is chunked and indexed for hybrid retrieval
(BM25 + dense embeddings, fused by reciprocal rank); an answer policy returns a curated
FAQ answer, composes a cited answer with a generator, or hands off to a person.
"""

from aiflywheel.tasks.assistant.task import TASK

__all__ = ["TASK"]
