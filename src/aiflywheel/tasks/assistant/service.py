"""Load a registered assistant version, and change its knowledge base while it runs.

``load_assistant(model_dir)`` opens ``assistant.json``, ``index/`` and, when the
version has one, ``judge/`` written by ``build_assistant``, loads the encoder and the
generator (lazily: a local LLM loads on its first answer, or at ``warm()``), and adds
the entries reviewers added live (``kb_entries`` in the store) that the index does not
hold yet.

``add_entry`` is what ``flywheel kb add`` and ``POST /v1/features/{name}/kb`` do: record
the entry in the store (accepting the feedback it came from, if any) and add it to the
index, where the next question finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiflywheel.errors import DataError, NotFoundError
from aiflywheel.settings import Settings, get_settings
from aiflywheel.store import Store
from aiflywheel.tasks.assistant.build import load_manifest
from aiflywheel.tasks.assistant.config import AssistantConfig
from aiflywheel.tasks.assistant.generators import GeneratorSettings, make_generator
from aiflywheel.tasks.assistant.knowledge_base import faq_entry_chunk
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.policy import Assistant, AssistantReply, Citation, Thresholds
from aiflywheel.tasks.assistant.records import add_kb_entry, get_turn, kb_entries
from aiflywheel.tasks.assistant.types import Chunk

LIVE_SOURCE = "kb-added"
JUDGE_DIR = "judge"  # the judge's folder inside an assistant version's folder


def assistant_from_parts(
    index: KnowledgeIndex, config: AssistantConfig, thresholds: Thresholds, settings: Settings
) -> Assistant:
    """An Assistant over ``index`` with the recipe's generator (and the extractive one as
    the fallback for unsupported LLM answers)."""
    generator = make_generator(config.generator, settings)
    fallback = None
    if config.generator.kind != "extractive":
        fallback = make_generator(GeneratorSettings(kind="extractive"), settings)
    return Assistant(
        index=index,
        generator=generator,
        thresholds=thresholds,
        top_k=config.top_k,
        candidates=config.candidates,
        passages=config.passages,
        max_message_chars=config.max_message_chars,
        mode=config.mode,
        fallback=fallback,
    )


def live_entry_chunks(store: Store, feature: str) -> list[Chunk]:
    """The chunks of every entry added live, the latest per entry id."""
    latest: dict[str, Chunk] = {}
    for row in kb_entries(store, feature):
        latest[row.entry_id] = faq_entry_chunk(
            row.question,
            row.answer,
            category=row.category,
            language=row.language or None,
            source=LIVE_SOURCE,
            entry_id=row.entry_id,
        )
    return list(latest.values())


def put_live_chunks(index: KnowledgeIndex, chunks: list[Chunk]) -> None:
    """Add live entries to ``index``, dropping an older live chunk with the same entry id
    (a corrected answer replaces the previous one)."""
    anchors = {c.anchor for c in chunks}
    ids = {c.id for c in chunks}
    stale = [
        c.id
        for c in index.chunks
        if c.source == LIVE_SOURCE and c.anchor in anchors and c.id not in ids
    ]
    if stale:
        index.remove_chunks(stale)
    index.add_chunks(chunks)


@dataclass(frozen=True)
class AssistantAnswer:
    """What ``aiflywheel.load(FEATURE).ask(...)`` returns: the answer to show, the
    passages it cites, and whether (and why) it hands the question to a person.

    Nothing is stored: a handoff from the Python API opens no ticket (POST
    /v1/chat/completions or ``flywheel ask --ticket`` do)."""

    answer: str
    citations: list[Citation]
    handoff: bool
    reason: str | None
    answer_type: str  # faq | generated | handoff | refusal
    confidence: float
    language: str

    @property
    def sources(self) -> list[str]:
        """``source#anchor`` of each cited passage, in citation order."""
        return [c.to_json()["citation"] for c in self.citations]

    @classmethod
    def of(cls, reply: AssistantReply) -> AssistantAnswer:
        return cls(
            answer=reply.text,
            citations=list(reply.citations),
            handoff=reply.handoff,
            reason=reply.reason,
            answer_type=reply.kind,
            confidence=float(reply.confidence),
            language=reply.language,
        )


@dataclass
class LoadedAssistant:
    feature: str
    version: int
    assistant: Assistant
    config: AssistantConfig
    model_dir: Path

    def ask(self, message: str, history: Sequence[dict] = ()) -> AssistantAnswer:
        """The answer (with citations) or handoff for ``message``; ``history`` is the
        conversation so far as ``{"role": "user" | "assistant", "content": ...}`` dicts."""
        return AssistantAnswer.of(self.reply(message, history))

    def reply(self, message: str, history: Sequence[dict] = ()) -> AssistantReply:
        """The policy's full reply (retrieval hits, details) to one message."""
        return self.assistant.answer(message, list(history))

    def warm(self) -> None:
        """Load the encoder's and the generator's weights now (not on the first question)."""
        self.assistant.search("warm up")
        warm = getattr(self.assistant.generator, "warm", None)
        if callable(warm):
            warm()


def load_assistant(
    model_dir: str | Path,
    *,
    feature: str,
    version: int,
    store: Store | None = None,
    settings: Settings | None = None,
) -> LoadedAssistant:
    from aiflywheel.tasks.assistant.encoders import encoder_from_name

    settings = settings or get_settings()
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    config = AssistantConfig.model_validate(manifest["config"])
    encoder = encoder_from_name(config.encoder, settings)
    index = KnowledgeIndex.load(model_dir / "index", encoder, fusion=config.fusion_settings())
    if store is not None:
        live = live_entry_chunks(store, feature)
        if live:
            put_live_chunks(index, live)
    thresholds = Thresholds(**manifest["thresholds"])
    assistant = assistant_from_parts(index, config, thresholds, settings)
    if manifest.get("judge"):
        from aiflywheel.tasks.assistant.judge import FeatureJudge

        assistant.judge = FeatureJudge.load(model_dir / JUDGE_DIR, index)
        assistant.judge.reorder = config.judge.reorder
        assistant.judge_role = config.judge.role
    return LoadedAssistant(feature, version, assistant, config, model_dir)


def add_entry(
    store: Store,
    feature: str,
    *,
    question: str,
    answer: str,
    actor: str,
    category: str = "",
    language: str | None = None,
    feedback_id: int | None = None,
    index: KnowledgeIndex | None = None,
) -> Chunk:
    """Record a live FAQ entry and add it to ``index`` (when given) at once.

    The entry passes the store's redaction gate first, so the live index answers with
    what ``kb_entries`` holds (and what a restart loads), never with raw PII."""
    from aiflywheel.store.redaction import redact_text

    chunk = faq_entry_chunk(
        redact_text(question),
        redact_text(answer),
        category=category,
        language=language,
        source=LIVE_SOURCE,
    )
    add_kb_entry(
        store,
        feature,
        entry_id=chunk.anchor,
        question=chunk.text,
        answer=chunk.answer,
        category=chunk.category,
        language=chunk.language,
        actor=actor,
        feedback_id=feedback_id,
    )
    if index is not None:
        put_live_chunks(index, [chunk])
    return chunk


def entry_from_feedback(store: Store, feedback_id: int, feature: str) -> tuple[str, str]:
    """(question, corrected answer) of a feedback row on an assistant answer."""
    items = store.list_feedback(feature, ids=[feedback_id])
    if not items:
        raise NotFoundError(f"feature {feature!r} has no feedback with id {feedback_id}")
    item = items[0]
    if not item.corrected_answer:
        raise DataError(
            f"feedback {feedback_id} has no corrected_answer to turn into a knowledge-base entry"
        )
    turn = get_turn(store, item.prediction_id)
    return turn.question, item.corrected_answer


__all__ = [
    "LIVE_SOURCE",
    "AssistantAnswer",
    "LoadedAssistant",
    "add_entry",
    "assistant_from_parts",
    "entry_from_feedback",
    "live_entry_chunks",
    "put_live_chunks",
    "load_assistant",
]
