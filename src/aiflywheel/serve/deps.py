"""Request dependencies: the app's state and API-key authentication.

A key is sent as ``Authorization: Bearer fwk_<id>_<secret>``. Successful checks are
remembered for ``auth_cache_seconds`` so the hot path does not query the store on every
request (a revoked key therefore stops working within that time). Client keys may
classify, give feedback and read features; admin keys may also promote and roll back.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from aiflywheel.store import Store

if TYPE_CHECKING:
    from aiflywheel.serve.config import ServeConfig
    from aiflywheel.serve.metrics import ServeMetrics
    from aiflywheel.serve.prediction_log import PredictionWriter
    from aiflywheel.serve.serving_models import ServingModels

CACHE_LIMIT = 10_000
API_ROLES = ("client", "admin")  # reviewer and viewer keys are for the console


class ApiError(Exception):
    """An answer other than success: status, error type and a one-line message."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, or everyone when auth is off."""

    key_id: str
    name: str
    role: str

    @property
    def actor(self) -> str:
        """How audit events name the caller: the key's name, else its id."""
        return (self.name or f"key {self.key_id}")[:100]


ANONYMOUS = Principal(key_id="-", name="anonymous (auth off)", role="admin")


class Authenticator:
    """Checks bearer tokens against the store, remembering successes briefly."""

    def __init__(self, store: Store, *, enabled: bool, cache_seconds: float) -> None:
        self.store = store
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def check(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await run_in_threadpool(self.store.authenticate, token)
        if row is None:
            self._cache.pop(digest, None)
            raise ApiError(
                401,
                "Unauthorized",
                "invalid or revoked API key; create one with `flywheel keys create`",
                {"WWW-Authenticate": "Bearer"},
            )
        principal = Principal(key_id=row.key_id, name=row.name, role=row.role)
        if self.cache_seconds > 0:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
                if len(self._cache) >= CACHE_LIMIT:
                    self._cache.clear()
            self._cache[digest] = (principal, now + self.cache_seconds)
        return principal


@dataclass
class AppState:
    """Everything a request handler needs, built by the app's lifespan."""

    config: ServeConfig
    store: Store
    models: ServingModels
    writer: PredictionWriter
    metrics: ServeMetrics
    auth: Authenticator


async def get_state(request: Request) -> AppState:
    """The app's state (async: a sync dependency would cost a thread hop per request)."""
    state = getattr(request.app.state, "flywheel", None)
    if state is None:
        raise ApiError(503, "StoreError", "the server is starting up or shutting down")
    return state


_bearer = HTTPBearer(auto_error=False, description="An API key from `flywheel keys create`.")


async def client_principal(
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """A client or admin key; everyone when auth is off. Console keys (reviewer, viewer)
    sign in to the console, not the API: 403."""
    if not state.auth.enabled:
        return ANONYMOUS
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401,
            "Unauthorized",
            "missing API key: send the header 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    principal = await state.auth.check(credentials.credentials)
    if principal.role not in API_ROLES:
        raise ApiError(
            403,
            "Forbidden",
            f"key {principal.key_id} has role {principal.role!r}, which signs in to the "
            "console (/console); the API needs a client or admin key",
        )
    return principal


async def admin_principal(
    principal: Annotated[Principal, Depends(client_principal)],
) -> Principal:
    """An admin key; a client key gets 403."""
    if principal.role != "admin":
        raise ApiError(
            403,
            "Forbidden",
            f"this needs an admin key; key {principal.key_id} has role {principal.role!r}",
        )
    return principal


State = Annotated[AppState, Depends(get_state)]
Client = Annotated[Principal, Depends(client_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]
