"""``POST /v1/predict``: classify uploaded images (multipart or base64 JSON).

Multipart: one or more ``file`` parts (and an optional ``feature`` field). JSON:
``{"feature": ..., "image": "<base64>"}`` or ``{"images": ["<base64>", ...]}`` (a
``data:image/...;base64,`` prefix is accepted). A body over the server's limit answers
413, an image over ``image.limits.max_bytes`` 413, an undecodable, tiny or
decompression-bomb image 422 naming which one. Predictions go through the feature's
micro-batcher; the log keeps a reference (sha256 and a thumbnail), not the image, by
default (``image.log``). Feedback goes to ``POST /v1/feedback`` with ``corrected_label``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiflywheel.serve.deps import ApiError, Client, State
from aiflywheel.serve.serving_models import as_probabilities
from aiflywheel.tasks.image_classification.images import ImageRejected

router = APIRouter(tags=["images"])
TASK_NAME = "image_classification"


class PredictJson(BaseModel):
    """One base64 image (``image``) or several (``images``) for one feature."""

    model_config = ConfigDict(extra="forbid")

    feature: str | None = Field(None, description="Feature; optional when one is served.")
    image: str | None = Field(None, description="One image, base64 (PNG/JPEG/WebP/GIF).")
    images: list[str] | None = Field(None, description="Several images, base64.")

    @model_validator(mode="after")
    def _one_of(self) -> PredictJson:
        if (self.image is None) == (self.images is None):
            raise ValueError("give either 'image' (one base64 string) or 'images' (a list)")
        return self


def _b64(value: str, where: str) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "ValidationError", f"{where}: not valid base64") from None


async def _read_request(request: Request) -> tuple[str | None, list[bytes], bool]:
    """(feature, images as bytes, single) from a multipart or JSON body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        feature = form.get("feature")
        uploads = [*form.getlist("file"), *form.getlist("files")]
        files = [u for u in uploads if hasattr(u, "read")]
        if not files:
            raise ApiError(422, "ValidationError", "file: upload at least one image part 'file'")
        return (
            str(feature) if feature else None,
            [await f.read() for f in files],
            len(files) == 1,
        )
    if kind == "application/json":
        try:
            body = PredictJson.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ApiError(
                422, "ValidationError", f"{where + ': ' if where else ''}{message}"
            ) from None
        if body.image is not None:
            return body.feature, [_b64(body.image, "image")], True
        return body.feature, [_b64(v, f"images[{i}]") for i, v in enumerate(body.images)], False
    raise ApiError(
        415 if kind else 422,
        "UnsupportedMediaType" if kind else "ValidationError",
        f"content-type {kind or 'missing'}: send multipart/form-data with 'file' parts or "
        "application/json with 'image' (base64)",
    )


@router.post("/v1/predict", summary="Classify one image or a batch")
async def predict(request: Request, state: State, principal: Client) -> JSONResponse:
    """The label and probabilities of each image; each prediction is logged for feedback."""
    from aiflywheel.settings import get_settings
    from aiflywheel.tasks.image_classification.logged import store_logged_image

    started = time.perf_counter()
    feature, blobs, single = await _read_request(request)
    model = await state.models.answering(feature)
    if model.task != TASK_NAME:
        from aiflywheel.core.registry import get_task

        route = get_task(model.task).predict_route
        raise ApiError(
            422,
            "ValidationError",
            f"feature {model.feature!r} does not classify images; send its inputs to {route}",
        )
    predictor = model.classifier
    config = predictor.config
    if len(blobs) > config.limits.max_images:
        raise ApiError(
            422,
            "ValidationError",
            f"images: at most {config.limits.max_images} per request, got {len(blobs)}",
        )
    state.writer.check_capacity()

    def decode_all() -> list[Any]:
        out = []
        for i, data in enumerate(blobs):
            where = "image" if single else f"images[{i}]"
            try:
                out.append(predictor.decode(data).pixels)
            except ImageRejected as exc:
                kind = "PayloadTooLarge" if exc.status == 413 else "ValidationError"
                raise ApiError(exc.status, kind, f"{where}: {exc}") from None
        return out

    pixels = await asyncio.to_thread(decode_all)
    in_progress = state.metrics.in_progress.labels(model.feature)
    in_progress.inc()
    try:
        proba = await model.score(pixels)
    finally:
        in_progress.dec()
    home = get_settings().home
    references = await asyncio.to_thread(
        lambda: [
            store_logged_image(
                data,
                feature=model.feature,
                home=home,
                keep=config.log.keep,
                thumb_px=config.log.thumbnail_px,
            )
            for data in blobs
        ]
    )
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    now = datetime.now(timezone.utc)
    labels = model.labels
    rows, out = [], []
    for reference, row in zip(references, proba, strict=True):
        best = int(row.argmax())
        probabilities = as_probabilities(labels, row)
        pid = uuid.uuid4().hex
        digest = reference.split()[1].removeprefix("sha256:")
        rows.append(
            {
                "id": pid,
                "feature": model.feature,
                "version": model.version,
                "text": reference,
                "output": {
                    "label": labels[best],
                    "probabilities": probabilities,
                    "image_sha256": digest,
                },
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
                "image_sha256": digest,
            }
        )
    await state.writer.write(rows)  # stored before answered: 503 when it cannot be
    state.metrics.predictions.labels(model.feature, str(model.version)).inc(len(rows))
    head = {"feature": model.feature, "version": model.version}
    return JSONResponse({**head, **out[0]} if single else {**head, "predictions": out})
