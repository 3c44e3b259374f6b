"""``POST /v1/chat/completions``: one route for every task that chats.

The body's ``model`` names a feature (``<feature>`` or ``<feature>:<suffix>``); the route
looks up that feature's task and hands the raw JSON body to the task's
``chat_handler()``. A feature whose task does not chat answers 422 naming the route its
inputs go to. A body without a known feature goes to the conversational task's handler
(the assistant), whose own checks name what is wrong.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from aiflywheel.core.registry import get_task, task_names
from aiflywheel.serve.deps import ApiError, Client, State

router = APIRouter(tags=["chat"])


def _default_handler() -> Any:
    for name in task_names():
        task = get_task(name)
        if task.conversational and task.chat_handler() is not None:
            return task.chat_handler()
    raise ApiError(404, "NotFound", "no task answers chat completions on this server")


@router.post("/v1/chat/completions", summary="Chat with a feature (OpenAI-compatible)")
async def chat_completions(
    request: Request,
    state: State,
    principal: Client,
    session_header: Annotated[str | None, Header(alias="X-Session-Id", max_length=100)] = None,
):
    try:
        raw = json.loads(await request.body() or b"null")
    except ValueError:
        raise ApiError(
            422, "ValidationError", "body: not JSON; send an OpenAI chat completion body"
        ) from None
    model = raw.get("model") if isinstance(raw, dict) else None
    handler = None
    if isinstance(model, str) and model:
        row = state.store.get_feature(model.split(":", 1)[0])
        if row is not None:
            task = get_task(row.task)
            handler = task.chat_handler()
            if handler is None:
                raise ApiError(
                    422,
                    "ValidationError",
                    f"feature {row.name!r} does not chat; send its inputs to {task.predict_route}",
                )
    handler = handler or _default_handler()
    return await handler(raw, state=state, principal=principal, session_header=session_header)
