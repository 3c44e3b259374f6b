"""Features, their versions, and the promotion decisions (admin keys only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from aiflywheel.core.version_metrics import VersionMetrics
from aiflywheel.errors import ModelError
from aiflywheel.serve.deps import Admin, AppState, Client, State
from aiflywheel.store import AuditEvent

router = APIRouter(tags=["features"])


class PromoteRequest(BaseModel):
    version: int = Field(..., ge=1, description="The version to make the champion.")
    reason: str = Field("", max_length=2000, description="Why (written to the audit log).")
    force: bool = Field(
        False,
        description="Override a refusing promotion gate, or a version that did not beat its "
        "baseline (needs a reason).",
    )


class RollbackRequest(BaseModel):
    to_version: int | None = Field(
        None, ge=1, description="The version to put back; null: the champion before this one."
    )
    reason: str = Field("", max_length=2000, description="Why (written to the audit log).")


@router.get("/v1/features", summary="Served features")
def list_features(state: State, principal: Client) -> dict[str, Any]:
    """Each served feature: serving and champion versions, labels, feedback, shadow."""
    champions = state.store.champion_versions()
    features = []
    for name in state.models.names:
        model = state.models.get(name)
        shadow = None
        scorer = state.models.shadows.get(name)
        if scorer is not None:
            version = scorer.model.version
            agreement = state.store.shadow_agreement(name).get(version, {})
            shadow = {
                "version": version,
                "scored": int(agreement.get("scored", 0)),
                "agreement": agreement.get("agreement"),
            }
        features.append(
            {
                "name": name,
                "task": model.task,
                "serving_version": model.version,
                "champion_version": champions.get(name),
                "labels": model.labels,
                "feedback": state.store.feedback_counts(name),
                "shadow": shadow,
            }
        )
    return {"auth": "on" if state.auth.enabled else "off", "features": features}


@router.get("/v1/features/{name}/versions", summary="Versions of a feature")
def list_versions(name: str, state: State, principal: Client) -> dict[str, Any]:
    """Every registered version with its status and headline metrics."""
    serving = state.models.versions().get(name)
    versions = [
        {
            "version": row.version,
            "status": row.status,
            "serving": row.version == serving,
            "model": f"{row.base_model}/{row.method}",
            "created_at": row.created_at.isoformat(timespec="seconds"),
            "metrics": VersionMetrics.of(row).headline(),
        }
        for row, _ in state.store.list_model_versions(name)
    ]
    return {"feature": name, "serving_version": serving, "versions": versions}


@router.get("/v1/features/{name}/audit", summary="Decisions about a feature's champion")
def list_audit(name: str, state: State, principal: Client) -> dict[str, Any]:
    """Every promotion, rollback and gate decision, oldest first."""
    return {"feature": name, "events": [e.to_json(name) for e in state.store.list_audit(name)]}


@router.post("/v1/features/{name}/promote", summary="Make a version the champion (admin)")
async def promote(
    name: str, body: PromoteRequest, state: State, principal: Admin
) -> dict[str, Any]:
    """Promote through the gate, then serve the new champion before answering."""
    from aiflywheel.core import versions

    event = await run_in_threadpool(
        lambda: versions.promote(
            state.store,
            name,
            body.version,
            actor=principal.actor,
            reason=body.reason,
            force=body.force,
        )
    )
    return await _answer(state, name, event)


@router.post("/v1/features/{name}/rollback", summary="Put back an earlier champion (admin)")
async def rollback(
    name: str, body: RollbackRequest, state: State, principal: Admin
) -> dict[str, Any]:
    """Roll back, then serve the restored champion before answering."""
    from aiflywheel.core import versions

    event = await run_in_threadpool(
        lambda: versions.rollback(
            state.store,
            name,
            actor=principal.actor,
            reason=body.reason,
            to_version=body.to_version,
        )
    )
    return await _answer(state, name, event)


async def _answer(state: AppState, name: str, event: AuditEvent) -> dict[str, Any]:
    reload_error = None
    if state.models.is_served(name):
        try:
            await state.models.refresh(name)
        except ModelError as exc:
            reload_error = str(exc)
    return {
        "event": event.to_json(name),
        "serving_version": state.models.versions().get(name),
        "reload_error": reload_error,
    }
