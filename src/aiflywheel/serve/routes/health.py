"""``/healthz`` (alive), ``/readyz`` (models loaded, store writable), ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from aiflywheel.errors import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz(request: Request) -> dict[str, Any]:
    state = getattr(request.app.state, "flywheel", None)
    auth = "unknown" if state is None else ("on" if state.auth.enabled else "off")
    return {"status": "ok", "auth": auth}


@router.get("/readyz", summary="Ready to answer: models loaded, store writable")
def readyz(request: Request) -> JSONResponse:
    state = getattr(request.app.state, "flywheel", None)
    if state is None or not state.models.ready:
        return _unavailable("ModelError", "models are not loaded yet")
    try:
        state.store.check_writable()
        state.writer.check_capacity()
    except StoreError as exc:
        return _unavailable("StoreError", str(exc))
    return JSONResponse(
        {"status": "ready", "serving": state.models.versions(), "log_backlog": state.writer.backlog}
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    app_metrics = request.app.state.metrics
    return Response(app_metrics.render(), media_type=app_metrics.content_type)


def _unavailable(kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"status": "unavailable", "error": {"type": kind, "message": message}}, status_code=503
    )
