"""``POST /v1/completions`` and this task's ``/v1/chat/completions`` handler, in OpenAI's
shapes: ``n``, ``stream``, ``max_tokens``, ``temperature``, ``top_p``, ``seed``.

A request whose ``n x max_tokens`` exceeds ``generation.limits.max_total_tokens`` (or whose
``n`` / ``max_tokens`` exceed their own ceilings) answers 422 naming the values. Every
answer is logged with its candidates; the response's ``flywheel`` extension carries the
``prediction_id`` to send feedback to ``POST /v1/feedback`` (``chosen``: a candidate's
index; ``corrected_response``; ``thumb``). ``stream: true`` sends server-sent events
(``text_completion`` / ``chat.completion.chunk``) ending with ``data: [DONE]``; it takes
``n: 1``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiflywheel.models.causal_lm import Example, Sampling
from aiflywheel.serve.deps import ApiError, Client, State

router = APIRouter(tags=["generation"])
TASK_NAME = "text_generation"


class _Sampled(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str | None = Field(None, description="The feature; optional when one is served.")
    n: int = Field(1, ge=1, description="Candidates to return.")
    stream: bool = Field(False, description="Server-sent events (n must be 1).")
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens per candidate.")
    temperature: float = Field(1.0, ge=0, le=2, description="0: greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Seed: the same request gives the same text.")


class CompletionRequest(_Sampled):
    prompt: str = Field(..., min_length=1, description="The text to continue or answer.")


class Turn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(..., min_length=1)


class ChatRequest(_Sampled):
    messages: list[Turn] = Field(..., min_length=1)


def _validated(cls: type[BaseModel], raw: Any) -> Any:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _sampling(body: _Sampled, config) -> Sampling:
    limits = config.limits
    max_tokens = body.max_tokens or min(limits.max_tokens, config.sampling.max_new_tokens)
    if body.n > limits.max_n:
        raise ApiError(422, "ValidationError", f"n: at most {limits.max_n}, got {body.n}")
    if max_tokens > limits.max_tokens:
        raise ApiError(
            422, "ValidationError", f"max_tokens: at most {limits.max_tokens}, got {max_tokens}"
        )
    if body.n * max_tokens > limits.max_total_tokens:
        raise ApiError(
            422,
            "ValidationError",
            f"n x max_tokens = {body.n} x {max_tokens} = {body.n * max_tokens} exceeds this "
            f"server's limit of {limits.max_total_tokens} tokens per request; lower n or "
            "max_tokens",
        )
    if body.stream and body.n != 1:
        raise ApiError(422, "ValidationError", f"stream: takes n 1, got n {body.n}")
    return Sampling(max_tokens, body.temperature, body.top_p, body.seed)


async def _served(state, feature: str | None):
    model = await state.models.answering(feature)
    if model.task != TASK_NAME:
        from aiflywheel.core.registry import get_task

        route = get_task(model.task).predict_route
        raise ApiError(
            422,
            "ValidationError",
            f"feature {model.feature!r} does not generate text; send its inputs to {route}",
        )
    return model


async def _log(state, model, text: str, output: dict[str, Any], latency_ms: float) -> str:
    """Store the prediction before answering (503 when the store cannot take it)."""
    pid = uuid.uuid4().hex
    await state.writer.write(
        [
            {
                "id": pid,
                "feature": model.feature,
                "version": model.version,
                "text": text,
                "output": output,
                "latency_ms": latency_ms,
                "created_at": datetime.now(timezone.utc),
            }
        ]
    )
    state.metrics.predictions.labels(model.feature, str(model.version)).inc()
    return pid


def _private(model, text: str) -> str:
    """``text`` with PII handled as the recipe's ``pii`` says, for the prediction log."""
    if model.pii.mode == "off" or not text:
        return text
    from aiflywheel.data.pii import scrub

    mode = "redact" if model.pii.mode == "drop_row" else model.pii.mode
    return scrub(text, mode=mode, types=model.pii.types)[0]


def _output(
    model, example: Example, texts: list[str], sampling: Sampling, n: int
) -> dict[str, Any]:
    """What the log keeps: prompt, turns and candidates with PII redacted."""
    return {
        "label": "generated",
        "candidates": [_private(model, t) for t in texts],
        "prompt": _private(model, example.prompt),
        "messages": [[r, _private(model, c)] for r, c in example.messages],
        "sampling": {**sampling.to_json(), "n": n},
    }


async def _answer(state, body: _Sampled, example: Example, shown: str, chat: bool):
    model = await _served(state, body.model)
    predictor = model.classifier
    if len(shown) > predictor.config.limits.max_prompt_chars:
        limit = predictor.config.limits.max_prompt_chars
        raise ApiError(
            422, "ValidationError", f"prompt: at most {limit} characters, got {len(shown)}"
        )
    sampling = _sampling(body, predictor.config)
    state.writer.check_capacity()
    created = int(time.time())
    kind = "chatcmpl" if chat else "cmpl"
    completion_id = f"{kind}-{uuid.uuid4().hex[:24]}"
    if body.stream:
        return StreamingResponse(
            _stream(state, model, example, shown, sampling, completion_id, created, chat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    started = time.perf_counter()
    done = await asyncio.to_thread(predictor.complete, example, n=body.n, sampling=sampling)
    latency = round((time.perf_counter() - started) * 1000, 3)
    output = _output(model, example, done.texts, sampling, body.n)
    pid = await _log(state, model, _private(model, shown), output, latency)
    choices = []
    for i, (text, tokens) in enumerate(zip(done.texts, done.completion_tokens, strict=True)):
        finish = "length" if tokens >= sampling.max_new_tokens else "stop"
        if chat:
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            )
        else:
            choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish})
    completion_tokens = sum(done.completion_tokens)
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model.feature,
            "choices": choices,
            "usage": {
                "prompt_tokens": done.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": done.prompt_tokens + completion_tokens,
            },
            "flywheel": {
                "prediction_id": pid,
                "version": model.version,
                "sampling": sampling.to_json(),
            },
        }
    )


async def _stream(
    state, model, example, shown, sampling, completion_id, created, chat
) -> AsyncIterator[str]:
    predictor = model.classifier
    started = time.perf_counter()
    pieces: Iterator[str] = predictor.stream(example, sampling=sampling)
    text = ""

    def event(delta: str | None, finish: str | None = None, **extra: Any) -> str:
        if chat:
            choice = {
                "index": 0,
                "delta": {"content": delta} if delta is not None else {},
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model.feature,
            "choices": [choice],
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    if chat:
        yield event(None, **{"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    sentinel = object()
    while True:
        piece = await asyncio.to_thread(next, pieces, sentinel)
        if piece is sentinel:
            break
        text += piece
        yield event(piece)
    latency = round((time.perf_counter() - started) * 1000, 3)
    output = _output(model, example, [text], sampling, 1)
    pid = await _log(state, model, _private(model, shown), output, latency)
    yield event(
        None if chat else "",
        "stop",
        flywheel={"prediction_id": pid, "version": model.version, "sampling": sampling.to_json()},
    )
    yield "data: [DONE]\n\n"


@router.post("/v1/completions", summary="Complete a prompt (OpenAI-compatible)")
async def completions(body: CompletionRequest, state: State, principal: Client):
    example = Example(response="", prompt=body.prompt)
    return await _answer(state, body, example, body.prompt, chat=False)


async def chat_completions(raw: Any, *, state, principal, session_header=None):
    """This task's answer to ``POST /v1/chat/completions`` (the route is shared by every
    task that chats; it hands the raw body here)."""
    body = _validated(ChatRequest, raw)
    turns = [(t.role, t.content.strip()) for t in body.messages]
    if turns[-1][0] != "user":
        raise ApiError(422, "ValidationError", "messages: the last message must have role 'user'")
    example = Example(response="", messages=tuple(turns))
    shown = "\n".join(f"{r}: {c}" for r, c in turns)
    return await _answer(state, body, example, shown, chat=True)
