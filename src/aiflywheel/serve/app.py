"""The REST API: ``create_app(config, store)`` builds a FastAPI app for ``flywheel serve``.

Startup loads the served models (and shadows) and starts the prediction-log writer and
the champion poller; shutdown finishes queued model calls and shadow scoring, then
writes the queued shadow rows before the process exits (predictions are stored before
they are answered, see ``prediction_log``). Every error answer is
``{"error": {"type": ..., "message": one line}}``: NotFoundError 404, ConflictError
409, StoreError 503, UpstreamTimeout 504, UpstreamError 502, any other FlywheelError
422, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiflywheel import __version__
from aiflywheel.core.registry import get_task, task_names
from aiflywheel.errors import (
    ConflictError,
    FlywheelError,
    NotFoundError,
    StoreError,
    UpstreamError,
    UpstreamTimeout,
)
from aiflywheel.serve.config import ServeConfig
from aiflywheel.serve.deps import ApiError, AppState, Authenticator
from aiflywheel.serve.metrics import RequestMetricsMiddleware, ServeMetrics
from aiflywheel.serve.prediction_log import PredictionWriter
from aiflywheel.serve.routes import chat, classify, features, health
from aiflywheel.serve.serving_models import ServingModels
from aiflywheel.store import Store

log = logging.getLogger("aiflywheel.serve")

HTTP_ERROR_TYPES = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
}


def status_of(exc: FlywheelError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, UpstreamTimeout):
        return 504
    if isinstance(exc, UpstreamError):
        return 502
    return 422


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    line = " ".join(message.split()) or kind
    return JSONResponse(
        {"error": {"type": kind, "message": line}}, status_code=status, headers=headers
    )


def describe_request_error(errors: list[Any]) -> str:
    """The first request validation error in one line naming the field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(p) for p in first.get("loc", ())]
    if loc and loc[0] == "body":
        loc = loc[1:]
    elif loc and loc[0] in ("header", "query", "path"):
        loc = [f"{loc[0]} {'.'.join(loc[1:])}"]
    where = ".".join(loc)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    kind, message = first.get("type", ""), str(first.get("msg", "invalid value"))
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", message)
        return f"the body is not valid JSON: {reason}"
    if kind == "missing":
        return f"missing required field {where!r}{more}"
    if kind == "extra_forbidden":
        return f"unknown field {where!r}{more}"
    message = message.removeprefix("Value error, ")
    shown = first.get("input")
    got = "" if isinstance(shown, (dict, list)) or not where else f", got {shown!r:.80}"
    return f"{where + ': ' if where else ''}{message}{got}{more}"


class BodyLimitMiddleware:
    """Answer 413 when a body is larger than ``limit`` (declared or actually streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "PayloadTooLarge", f"request body is larger than {self.limit} bytes"
        )
        await response(scope, receive, send)


def create_app(config: ServeConfig | None = None, store: Store | None = None) -> FastAPI:
    """The API app. Without ``store`` it opens the store named by the runtime settings."""
    config = config or ServeConfig()
    metrics = ServeMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from aiflywheel.store import open_store

        the_store = store or await asyncio.to_thread(open_store)
        writer = PredictionWriter(
            the_store,
            max_backlog=config.log_max_backlog,
            wait_seconds=config.log_wait_seconds,
            linger_ms=config.log_linger_ms,
            drain_seconds=config.drain_seconds,
            hook=metrics.writer_hook,
        )
        metrics.watch_backlog(lambda: writer.backlog, lambda: writer.shadow_backlog)
        metrics.watch_drift(the_store)
        writer.start()
        models = ServingModels(the_store, config, metrics, writer)
        auth = Authenticator(
            the_store, enabled=config.auth, cache_seconds=config.auth_cache_seconds
        )
        try:
            await models.start()
            app.state.flywheel = AppState(
                config=config,
                store=the_store,
                models=models,
                writer=writer,
                metrics=metrics,
                auth=auth,
            )
            if not config.auth:
                log.warning("authentication is OFF: anyone who can reach this port is an admin")
            yield
        finally:
            app.state.flywheel = None
            await models.close()
            left = await asyncio.to_thread(writer.close)
            if not left:
                log.info("prediction log flushed")

    app = FastAPI(
        title="aiflywheel",
        version=__version__,
        description="Classify with the served champion models, collect feedback, "
        "promote and roll back versions. Send `Authorization: Bearer <key>` "
        "(keys come from `flywheel keys create`).",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.flywheel = None
    app.state.config = config
    app.include_router(classify.router)
    app.include_router(chat.router)  # hands each body to its feature's task
    for name in task_names():  # each task adds its own routes (the assistant: chat)
        router = get_task(name).api_router()
        if router is not None:
            app.include_router(router)
    app.include_router(features.router)
    app.include_router(health.router)
    from aiflywheel.console.app import mount_console

    mount_console(app)  # the product manager's pages at /console

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(FlywheelError)
    async def _flywheel_error(request: Request, exc: FlywheelError) -> JSONResponse:
        return error_response(status_of(exc), type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "ValidationError", describe_request_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = HTTP_ERROR_TYPES.get(exc.status_code, "HTTPError")
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"no route {request.method} {request.url.path}; see /docs"
        return error_response(exc.status_code, kind, message, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            500, "InternalError", f"unexpected {type(exc).__name__}; see the server log"
        )

    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
