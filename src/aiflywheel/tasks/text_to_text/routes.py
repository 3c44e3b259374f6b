"""``POST /v1/transform``: one text (``text``) or several (``texts``) in, each one's output
and beam alternatives out; every prediction is logged for feedback. A correction goes to
``POST /v1/feedback`` as ``corrected_target`` (the output the model should have given).

Bad input answers 422 in one line: a blank or too long text (``max_source_chars``), more
texts than ``max_texts``, a beam wider than the recipe's ``beam_size``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiflywheel.errors import DataError
from aiflywheel.serve.deps import ApiError, Client, State

router = APIRouter(tags=["text to text"])
TASK_NAME = "text_to_text"


class TransformRequest(BaseModel):
    """One text or several for one feature, with optional decoding settings."""

    model_config = ConfigDict(extra="forbid")

    feature: str | None = Field(None, description="Feature; optional when one is served.")
    text: str | None = Field(None, description="One source text.")
    texts: list[str] | None = Field(None, description="Several source texts.")
    beam_size: int | None = Field(
        None, ge=1, le=16, description="Beam width (1: greedy); null: the recipe's beam_size."
    )
    alternatives: int | None = Field(
        None, ge=0, le=16, description="Beam alternatives per output; null: the recipe's."
    )

    @model_validator(mode="after")
    def _one_of(self) -> TransformRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give either 'text' (one string) or 'texts' (a list)")
        return self


@router.post("/v1/transform", summary="Transform (translate, rewrite) one text or a batch")
async def transform(body: TransformRequest, state: State, principal: Client) -> JSONResponse:
    """Each text's output, its score (mean log-probability per token) and alternatives."""
    started = time.perf_counter()
    model = await state.models.answering(body.feature)
    if model.task != TASK_NAME:
        from aiflywheel.core.registry import get_task

        route = get_task(model.task).predict_route
        raise ApiError(
            422,
            "ValidationError",
            f"feature {model.feature!r} does not transform text; send its inputs to {route}",
        )
    predictor = model.classifier
    config = predictor.config
    single = body.text is not None
    raw = [body.text] if single else list(body.texts or [])
    if not raw:
        raise ApiError(422, "ValidationError", "texts: send at least one text")
    if len(raw) > config.max_texts:
        raise ApiError(
            422, "ValidationError", f"texts: at most {config.max_texts} per request, got {len(raw)}"
        )
    if body.beam_size is not None and body.beam_size > config.beam_size:
        raise ApiError(
            422,
            "ValidationError",
            f"beam_size: at most {config.beam_size} for feature {model.feature!r}, got "
            f"{body.beam_size}",
        )
    try:
        texts = [predictor.check(t, "text" if single else f"texts[{i}]") for i, t in enumerate(raw)]
    except DataError as exc:
        raise ApiError(422, "ValidationError", str(exc)) from None
    state.writer.check_capacity()
    in_progress = state.metrics.in_progress.labels(model.feature)
    in_progress.inc()
    try:
        results = await asyncio.to_thread(
            predictor.transform, texts, beam_size=body.beam_size, alternatives=body.alternatives
        )
    finally:
        in_progress.dec()
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    now = datetime.now(timezone.utc)
    rows, out = [], []
    for text, result in zip(texts, results, strict=True):
        pid = uuid.uuid4().hex
        rows.append(
            {
                "id": pid,
                "feature": model.feature,
                "version": model.version,
                "text": text,
                "output": {"label": result["output"][:80], **result},
                "latency_ms": latency_ms,
                "created_at": now,
            }
        )
        out.append({"prediction_id": pid, **result})
    await state.writer.write(rows)
    state.metrics.predictions.labels(model.feature, str(model.version)).inc(len(rows))
    head = {"feature": model.feature, "version": model.version}
    return JSONResponse({**head, **out[0]} if single else {**head, "predictions": out})
