"""``POST /v1/classify`` and ``POST /v1/feedback``."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiflywheel.core.registry import DEFAULT_TASK, get_task
from aiflywheel.core.task import parse_feedback
from aiflywheel.errors import NotFoundError, StoreError
from aiflywheel.serve.config import ServeConfig
from aiflywheel.serve.deps import ApiError, Client, State
from aiflywheel.serve.serving_models import as_probabilities

router = APIRouter(tags=["predictions"])

PREPARE_INLINE_CHARS = 20_000
FEEDBACK_KINDS = {"corrected_label": "corrected"}  # metric label of a payload field


class ClassifyRequest(BaseModel):
    """One text (``text``) or several (``texts``) for one feature."""

    model_config = ConfigDict(extra="forbid")

    feature: str | None = Field(
        None, description="Feature name; may be left out when one feature is served."
    )
    text: str | None = Field(None, description="One text to classify.")
    texts: list[str] | None = Field(None, description="Several texts to classify.")

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> ClassifyRequest:
        for name in ("text", "texts"):
            if name in self.model_fields_set and getattr(self, name) is None:
                kind = "a string" if name == "text" else "a list of strings"
                raise ValueError(f"{name} must be {kind}, got null")
        if self.text is not None and self.texts is not None:
            raise ValueError("give either 'text' (one string) or 'texts' (a list), not both")
        if self.text is None and self.texts is None:
            raise ValueError("give 'text' (one string) or 'texts' (a list of strings)")
        return self


class PredictionOut(BaseModel):
    prediction_id: str = Field(description="Id to send feedback about this prediction.")
    label: str
    confidence: float
    probabilities: dict[str, float]


class ClassifyOut(PredictionOut):
    feature: str
    version: int = Field(description="The model version that answered.")


class ClassifyBatchOut(BaseModel):
    feature: str
    version: int = Field(description="The model version that answered.")
    predictions: list[PredictionOut]


class FeedbackRequest(BaseModel):
    """A user's answer to a prediction. Besides ``prediction_id`` (and an optional
    ``idempotency_key``), the body is the feedback payload of the feature's task, checked by
    its model: a classifier takes ``corrected_label``, an assistant ``corrected_answer``;
    both take ``thumb`` (up/down) and ``comment``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"prediction_id": "9f2c…", "corrected_label": "refund"},
                {"prediction_id": "9f2c…", "thumb": "down", "comment": "wrong queue"},
                {"prediction_id": "9f2c…", "corrected_answer": "Use the reset link."},
            ]
        },
    )

    prediction_id: str = Field(..., min_length=1, max_length=64)
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Retries with the same key store the feedback once (or send the "
        "Idempotency-Key header).",
    )

    @property
    def payload(self) -> dict[str, Any]:
        """The fields besides prediction_id and idempotency_key: the task's payload."""
        return dict(self.model_extra or {})


class FeedbackOut(BaseModel):
    feedback_id: int
    prediction_id: str
    feature: str
    created: bool = Field(description="True when a new feedback item was stored.")
    updated: bool = Field(
        False,
        description="True when a second correction replaced the answer of the prediction's "
        "pending item (same feedback_id).",
    )
    review_state: str


def check_texts(texts: list[str], config: ServeConfig, *, single: bool) -> None:
    """Reject an empty list, too many texts, blank texts and overlong texts (422)."""
    if not texts:
        raise ApiError(422, "ValidationError", "texts: give at least one text")
    if len(texts) > config.max_texts:
        raise ApiError(
            422,
            "ValidationError",
            f"texts: at most {config.max_texts} texts per request, got {len(texts)}",
        )
    for i, text in enumerate(texts):
        where = "text" if single else f"texts[{i}]"
        if not text.strip():
            raise ApiError(422, "ValidationError", f"{where}: empty or whitespace-only text")
        if len(text) > config.max_text_chars:
            raise ApiError(
                422,
                "ValidationError",
                f"{where}: at most {config.max_text_chars} characters, got {len(text)}",
            )


@router.post(
    "/v1/classify",
    summary="Classify one text or a batch",
    responses={200: {"model": ClassifyOut | ClassifyBatchOut}},
)
async def classify(body: ClassifyRequest, state: State, principal: Client) -> JSONResponse:
    """Answer with the label and probabilities; each prediction is stored (for feedback and
    training) before the answer leaves, else 503."""
    started = time.perf_counter()
    single = body.text is not None
    raw = [body.text] if body.text is not None else list(body.texts or [])
    model = await state.models.answering(body.feature)
    route = get_task(model.task).predict_route
    if route != "/v1/classify":
        raise ApiError(
            422,
            "ValidationError",
            f"feature {model.feature!r} does not classify texts; send its inputs to {route}",
        )
    check_texts(raw, state.config, single=single)
    state.writer.check_capacity()  # 503 before scoring when the store cannot take the rows
    if sum(map(len, raw)) > PREPARE_INLINE_CHARS:  # keep the event loop free for big requests
        prepared = await asyncio.to_thread(lambda: [model.prepare(text) for text in raw])
    else:
        prepared = [model.prepare(text) for text in raw]
    for i, text in enumerate(prepared):
        if not text:
            where = "text" if single else f"texts[{i}]"
            raise ApiError(422, "ValidationError", f"{where}: nothing left after cleaning")
    in_progress = state.metrics.in_progress.labels(model.feature)
    in_progress.inc()
    try:
        proba = await model.score(prepared)
    finally:
        in_progress.dec()
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    now = datetime.now(timezone.utc)
    labels = model.labels
    rows: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for text, row in zip(prepared, proba, strict=True):
        best = int(row.argmax())
        probabilities = as_probabilities(labels, row)
        pid = uuid.uuid4().hex
        rows.append(
            {
                "id": pid,
                "feature": model.feature,
                "version": model.version,
                "text": text,
                "output": {"label": labels[best], "probabilities": probabilities},
                "latency_ms": latency_ms,
                "created_at": now,
            }
        )
        out.append(
            {
                "prediction_id": pid,
                "label": labels[best],
                "confidence": probabilities[labels[best]],
                "probabilities": probabilities,
            }
        )
    await state.writer.write(rows)  # stored before answered: 503 when it cannot be
    state.metrics.predictions.labels(model.feature, str(model.version)).inc(len(rows))
    shadow = state.models.shadows.get(model.feature)
    if shadow is not None and shadow.model.version != model.version:
        shadow.offer([r["id"] for r in rows], prepared, [r["output"]["label"] for r in rows])
    head = {"feature": model.feature, "version": model.version}
    return JSONResponse({**head, **out[0]} if single else {**head, "predictions": out})


@router.post(
    "/v1/feedback",
    summary="Give feedback on a prediction",
    status_code=201,
    responses={200: {"model": FeedbackOut, "description": "An idempotent retry."}},
    response_model=FeedbackOut,
)
def feedback(
    body: FeedbackRequest,
    state: State,
    principal: Client,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> JSONResponse:
    """Store feedback (durably, before answering): 201 new, 200 same retry or a second
    correction that replaced the pending one, 409 key reused or the correction reviewed."""
    key = body.idempotency_key or idempotency_key
    if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
        raise ApiError(
            422,
            "ValidationError",
            "idempotency_key: the body and the Idempotency-Key header disagree",
        )
    pid = body.prediction_id
    found = state.store.get_prediction(pid)  # every answered prediction is stored
    if found is None:
        raise NotFoundError(f"no prediction with id {pid!r}")
    feature, output = found[1], found[0].output
    feature_row = state.store.get_feature(feature)
    task = get_task(feature_row.task if feature_row is not None else DEFAULT_TASK)
    try:
        payload = parse_feedback(task, body.payload, output, feature=feature).stored()
    except ValidationError as exc:
        problems = task.feedback_payload.problems(exc)
        errors = [{**p, "loc": ("body", *p["loc"])} for p in problems]
        raise RequestValidationError(errors) from None
    # A retry token is the caller's own: scoped per API key.
    stored = {"payload": payload, "idempotency_key": key, "idempotency_scope": principal.key_id}
    try:
        row, outcome = state.store.add_feedback(pid, **stored)
    except StoreError:
        if key is None:
            raise
        # A concurrent request with the same key may have won the insert: look again.
        row, outcome = state.store.add_feedback(pid, **stored)
    created = outcome == "created"
    if outcome != "repeated":
        for name, value in payload.items():
            if value:
                kind = f"thumb_{value}" if name == "thumb" else FEEDBACK_KINDS.get(name, name)
                state.metrics.feedback.labels(feature, kind).inc()
    content = {
        "feedback_id": row.id,
        "prediction_id": pid,
        "feature": feature,
        "created": created,
        "updated": outcome == "updated",
        "review_state": row.review_state,
    }
    return JSONResponse(content, status_code=201 if created else 200)
