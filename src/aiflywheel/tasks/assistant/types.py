"""Value types shared by the assistant's knowledge base, retrieval, generators and policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ChunkKind = Literal["faq", "doc"]


@dataclass(frozen=True)
class Chunk:
    """One retrievable piece of the knowledge base, with what a citation needs.

    ``source`` is the file the chunk came from, relative to the knowledge-base folder
    (``faq.jsonl``, ``docs/returns.en.md``); ``anchor`` locates it inside that file: the
    FAQ entry's id, or for a document the slug of the nearest heading
    (``heading_slug``), and ``citation`` joins them (``docs/returns.en.md#refund-timeline``).
    For a FAQ chunk ``text`` is the question and ``answer`` the curated answer.
    """

    id: str
    kind: ChunkKind
    text: str
    source: str
    anchor: str
    title: str = ""
    language: str = ""
    answer: str = ""
    category: str = ""

    @property
    def citation(self) -> str:
        return f"{self.source}#{self.anchor}" if self.anchor else self.source

    @property
    def passage(self) -> str:
        """The text a generator reads: a FAQ's question and answer, or a document chunk."""
        if self.kind == "faq":
            return f"{self.text}\n{self.answer}".strip()
        return f"{self.title}\n{self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class RetrievalHit:
    """A chunk found for a query, with its fused score and the ranks behind it (1-based;
    ``None`` when that retriever did not return the chunk)."""

    chunk: Chunk
    score: float
    bm25_rank: int | None = None
    dense_rank: int | None = None
    bm25_score: float | None = None
    dense_score: float | None = None


@dataclass
class Generation:
    """A generator's answer: text citing passages as [1], [2] (1-based positions in the
    passage list it was given), the passages it cites, and token counts."""

    text: str
    cited: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generator: str = ""
    seconds: float = 0.0
