"""``POST /v1/chat/completions`` (OpenAI-compatible) and the assistant's knowledge base.

The request is OpenAI's chat completion body; ``model`` names an assistant feature. The
last user message is the question; the conversation is kept per session, named by the
extension field ``session_id``, the ``X-Session-Id`` header, or ``user`` (in that order;
without any, each request is its own session and the messages sent are the history).

The answer is a normal ``chat.completion`` (or, with ``stream: true``, server-sent
``chat.completion.chunk`` events ending with ``data: [DONE]``) plus one extension field,
``flywheel`` (on the completion, and on the last chunk of a stream)::

    "flywheel": {
      "prediction_id": "...",        # send feedback about this answer to /v1/feedback
      "session_id": "...", "version": 3,
      "answer_type": "faq" | "generated" | "handoff" | "refusal" | "small_talk" | "clarify",
      "handoff": false, "reason": null, "ticket_id": null,
      "confidence": 0.87, "language": "en",
      "citations": [{"n": 1, "source": "faq.jsonl", "anchor": "ship-01-en",
                     "citation": "faq.jsonl#ship-01-en", "title": "...", "text": "..."}],
      "supported": true, "unsupported_sentences": [], "generator": "extractive"}

In a stream, answers no model writes token by token (a curated FAQ answer, quoted
passage sentences, a handoff) arrive in pieces of a clause or a few words
(``streaming.stream_pieces``); their concatenation is the answer.

In a stream the post-check runs after the deltas went out: when it replaced the
streamed text (an LLM answer not supported by the passages, or an "I don't know" turned
into a handoff), the last chunk's ``flywheel`` has ``replaced_streamed_text: true`` and
``final_text``, the answer to show instead.

``model: "<feature>:generator"`` skips retrieval and the policy and hands the messages to
that assistant's generator as they are: a plain OpenAI-compatible completion endpoint
for another assistant's ``openai`` generator (what vLLM or Ollama would otherwise be).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiflywheel.errors import FlywheelError
from aiflywheel.serve.deps import Admin, ApiError, Client, State

router = APIRouter(tags=["assistant"])
log = logging.getLogger("aiflywheel.serve")

GENERATOR_SUFFIX = ":generator"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return self.content or ""


class ChatRequest(BaseModel):
    """OpenAI's chat completion body (fields the assistant does not use are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, description="The assistant feature's name.")
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="For '<feature>:generator': most tokens to generate (at most "
        "the generator's max_new_tokens).",
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="For '<feature>:generator': sampling temperature."
    )
    user: str | None = Field(None, max_length=100)
    session_id: str | None = Field(
        None, min_length=1, max_length=100, description="Extension: the conversation's id."
    )

    @model_validator(mode="after")
    def _has_user_message(self) -> ChatRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages: give at least one message with role 'user'")
        return self


class KbEntryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(None, max_length=2000)
    answer: str | None = Field(None, max_length=10_000)
    category: str = Field("", max_length=100)
    language: Literal["zh", "en"] | None = None
    feedback_id: int | None = Field(
        None, description="Turn this feedback's corrected_answer (and its question) into the entry."
    )

    @model_validator(mode="after")
    def _entry_or_feedback(self) -> KbEntryRequest:
        if self.feedback_id is None and not (
            (self.question or "").strip() and (self.answer or "").strip()
        ):
            raise ValueError("give question and answer, or feedback_id")
        return self


class TicketAnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str = Field(
        ...,
        min_length=1,
        max_length=10_000,
        description="What the customer should have been told; it waits in the feedback "
        "review queue, and once accepted the next `flywheel retrain` learns it.",
    )


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _usage(generation) -> dict[str, int]:
    """OpenAI's ``usage`` of a ``Generation`` (zeros for answers no model wrote)."""
    prompt = generation.prompt_tokens if generation else 0
    completion = generation.completion_tokens if generation else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(
    completion_id: str, created: int, model: str, generation, text: str, **extra
) -> JSONResponse:
    """A non-streamed ``chat.completion`` body (``extra``: extension fields)."""
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(generation),
            **extra,
        }
    )


def _session(body: ChatRequest, header: str | None) -> tuple[str, bool]:
    """(session id, whether the server keeps its history)."""
    for value in (body.session_id, header, body.user):
        if value:
            return value, True
    return "s-" + uuid.uuid4().hex[:16], False


async def _answer_in_thread(hosted, call):
    """Run a blocking answer on a worker thread (one at a time for a local LLM)."""

    def run():
        if hosted.exclusive:
            with hosted.serial:
                return call()
        return call()

    return await asyncio.to_thread(run)


def _record(state, feature: str, hosted, session_id: str, question: str, reply) -> dict:
    from aiflywheel.tasks.assistant.records import TurnRecord, log_turn

    prediction_id = uuid.uuid4().hex
    ticket = log_turn(
        state.store,
        TurnRecord(
            prediction_id=prediction_id,
            feature=feature,
            version=hosted.version,
            session_id=session_id,
            question=question,
            answer=reply.text,
            kind=reply.kind,
            handoff=reply.handoff,
            reason=reply.reason,
            confidence=reply.confidence,
            latency_ms=1000 * reply.seconds,
            details={
                "citations": [c.to_json()["citation"] for c in reply.citations],
                "supported": reply.supported,
                **{k: v for k, v in reply.details.items() if k != "replaced"},
                "replaced": bool(reply.details.get("replaced")),
            },
        ),
    )
    state.metrics.predictions.labels(feature, str(hosted.version)).inc()
    return {
        "prediction_id": prediction_id,
        "session_id": session_id,
        "version": hosted.version,
        "ticket_id": ticket,
        **reply.extension(),
    }


async def handle_chat(raw: Any, *, state, principal, session_header=None):
    """The assistant's answer to the shared ``POST /v1/chat/completions`` route
    (``serve/routes/chat.py``): the raw body checked as a ``ChatRequest``."""
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    try:
        body = ChatRequest.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None
    return await chat_completions(body, state, principal, session_header)


async def chat_completions(
    body: ChatRequest,
    state: State,
    principal: Client,
    session_header: Annotated[str | None, Header(alias="X-Session-Id", max_length=100)] = None,
):
    if body.model.endswith(GENERATOR_SUFFIX):
        return await _raw_generation(body, state)
    hosted = state.models.assistants.get(body.model)
    question = next(m.text for m in reversed(body.messages) if m.role == "user")
    session_id, kept = _session(body, session_header)
    assistant = hosted.loaded.assistant
    assistant.check_message(question)  # 422 before anything is stored or streamed
    if kept:
        from aiflywheel.tasks.assistant.records import session_history

        history = await asyncio.to_thread(
            session_history,
            state.store,
            body.model,
            session_id,
            hosted.loaded.config.history_turns,
        )
    else:
        history = [
            {"role": m.role, "content": m.text}
            for m in body.messages[:-1]
            if m.role in ("user", "assistant")
        ][-2 * hosted.loaded.config.history_turns :]
    created = int(time.time())
    completion_id = _completion_id()
    if not body.stream:
        reply = await _answer_in_thread(hosted, lambda: assistant.answer(question, history))
        extension = await asyncio.to_thread(
            _record, state, body.model, hosted, session_id, question, reply
        )
        return _completion(
            completion_id, created, body.model, reply.generation, reply.text, flywheel=extension
        )
    return StreamingResponse(
        _stream(state, body.model, hosted, question, history, session_id, completion_id, created),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _chunk(completion_id: str, created: int, model: str, delta: dict, finish=None, **extra) -> str:
    payload = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _pump(iterator_factory, hosted) -> AsyncIterator[Any]:
    """Items of a blocking iterator, produced on a worker thread, as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def produce() -> None:
        try:
            if hosted is not None and hosted.exclusive:
                with hosted.serial:
                    for item in iterator_factory():
                        loop.call_soon_threadsafe(queue.put_nowait, item)
            else:
                for item in iterator_factory():
                    loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # delivered to the consumer, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    worker = loop.run_in_executor(None, produce)
    while True:
        item = await queue.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            await worker
            raise item
        yield item
    await worker


def _error_event(exc: BaseException) -> str:
    """The SSE event of an error after the stream started (no status code can change
    now): like the error answers, a FlywheelError's one-line message, anything else
    logged here and named only by its type."""
    if isinstance(exc, FlywheelError):
        kind = type(exc).__name__
        message = " ".join(str(exc).split()) or kind
    else:
        log.error("unexpected error while streaming an answer", exc_info=exc)
        kind, message = "InternalError", f"unexpected {type(exc).__name__}; see the server log"
    error = {"error": {"type": kind, "message": message}}
    return f"data: {json.dumps(error, ensure_ascii=False)}\n\n"


async def _stream(state, model, hosted, question, history, session_id, completion_id, created):
    from aiflywheel.tasks.assistant.policy import AssistantReply
    from aiflywheel.tasks.assistant.streaming import stream_pieces

    assistant = hosted.loaded.assistant
    yield _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
    try:
        async for item in _pump(lambda: assistant.stream(question, history), hosted):
            if isinstance(item, AssistantReply):
                extension = await asyncio.to_thread(
                    _record, state, model, hosted, session_id, question, item
                )
                yield _chunk(
                    completion_id,
                    created,
                    model,
                    {},
                    "stop",
                    usage=_usage(item.generation),
                    flywheel=extension,
                )
            elif item:
                # a curated or quoted answer comes whole: streamed in clause-sized pieces
                for piece in stream_pieces(item):
                    yield _chunk(completion_id, created, model, {"content": piece})
    except Exception as exc:
        yield _error_event(exc)
    yield "data: [DONE]\n\n"


async def _raw_generation(body: ChatRequest, state):
    """The messages straight to an assistant's generator (no retrieval, no policy)."""
    feature = body.model[: -len(GENERATOR_SUFFIX)]
    hosted = state.models.assistants.get(feature)
    generator = hosted.loaded.assistant.generator
    complete = getattr(generator, "complete_messages", None)
    if complete is None:
        raise ApiError(
            422,
            "ValidationError",
            f"model {body.model!r}: the {hosted.loaded.config.generator.kind} generator of "
            f"{feature!r} does not take raw messages; use model {feature!r}",
        )
    messages = [{"role": m.role, "content": m.text} for m in body.messages]
    limits = {"max_new_tokens": body.max_tokens, "temperature": body.temperature}
    created, completion_id = int(time.time()), _completion_id()
    if not body.stream:
        generation = await _answer_in_thread(hosted, lambda: complete(messages, **limits))
        return _completion(completion_id, created, body.model, generation, generation.text)
    stream = getattr(generator, "stream_messages", None)
    if stream is None:
        raise ApiError(422, "ValidationError", f"model {body.model!r} does not stream raw messages")

    async def events():
        yield _chunk(completion_id, created, body.model, {"role": "assistant", "content": ""})
        try:
            async for piece in _pump(lambda: stream(messages, **limits), hosted):
                if piece:
                    yield _chunk(completion_id, created, body.model, {"content": piece})
            yield _chunk(completion_id, created, body.model, {}, "stop")
        except Exception as exc:
            yield _error_event(exc)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post(
    "/v1/features/{name}/kb",
    summary="Add a knowledge-base entry to a served assistant (admin)",
    status_code=201,
)
async def add_kb_entry(name: str, body: KbEntryRequest, state: State, principal: Admin):
    """The entry is stored and searchable by the next question; from ``feedback_id`` the
    question is the one answered and the answer the feedback's corrected_answer (that
    feedback is marked accepted)."""
    from aiflywheel.tasks.assistant.service import add_entry, entry_from_feedback

    hosted = state.models.assistants.get(name)
    question, answer = body.question, body.answer
    if body.feedback_id is not None:
        question, answer = await asyncio.to_thread(
            entry_from_feedback, state.store, body.feedback_id, name
        )
        question, answer = body.question or question, body.answer or answer
    chunk = await asyncio.to_thread(
        lambda: add_entry(
            state.store,
            name,
            question=question or "",
            answer=answer or "",
            category=body.category,
            language=body.language,
            actor=principal.name,
            feedback_id=body.feedback_id,
            index=hosted.loaded.assistant.index,
        )
    )
    return {
        "feature": name,
        "entry_id": chunk.anchor,
        "citation": chunk.citation,
        "question": chunk.text,
        "answer": chunk.answer,
        "language": chunk.language,
    }


@router.get("/v1/features/{name}/tickets", summary="Open handoff tickets (admin)")
async def tickets(name: str, state: State, principal: Admin) -> dict[str, Any]:
    from aiflywheel.tasks.assistant.records import list_tickets

    state.models.assistants.get(name)
    rows = await asyncio.to_thread(list_tickets, state.store, name)
    return {
        "feature": name,
        "tickets": [
            {
                "id": t.id,
                "prediction_id": t.prediction_id,
                "session_id": t.session_id,
                "question": t.question,
                "reason": t.reason,
                "status": t.status,
                "created_at": t.created_at.isoformat(timespec="seconds"),
            }
            for t in rows
        ],
    }


@router.post(
    "/v1/features/{name}/tickets/{ticket_id}/answer",
    summary="Answer a handoff ticket (admin): the answer joins the feedback review queue",
)
async def answer_ticket(
    name: str, ticket_id: int, body: TicketAnswerRequest, state: State, principal: Admin
) -> dict[str, Any]:
    """Store a person's answer as pending feedback (``corrected_answer``) on the handed-off
    prediction and close the ticket; 201 new, 200 a pending answer replaced, 409 when the
    answer was already reviewed."""
    from aiflywheel.tasks.assistant.records import answer_ticket as answer

    state.models.assistants.get(name)
    done = await asyncio.to_thread(
        lambda: answer(state.store, ticket_id, body.answer, actor=principal.actor, feature=name)
    )
    return JSONResponse(
        {
            "feature": name,
            "ticket_id": done.ticket_id,
            "status": "answered",
            "question": done.question,
            "feedback_id": done.feedback_id,
            "review_state": done.review_state,
            "created": done.outcome == "created",
        },
        status_code=201 if done.outcome == "created" else 200,
    )


__all__ = ["router"]
