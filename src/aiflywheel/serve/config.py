"""Settings of one ``flywheel serve`` process (its command-line options)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aiflywheel.core.versions import parse_version_ref
from aiflywheel.errors import SettingsError
from aiflywheel.recipe import describe_validation_error


class ServeConfig(BaseModel):
    """What to serve and the limits to serve it under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    features: tuple[str, ...] = Field(
        (), description="Features to serve; empty serves every feature with a model version."
    )
    serve_candidates: bool = Field(
        False,
        description="Serve a feature's newest candidate while it has no champion (default: "
        "classify answers 409 naming the candidates until one is promoted).",
    )
    shadows: tuple[tuple[str, int], ...] = Field(
        (), description="(feature, version) pairs scored in the background next to the champion."
    )
    auth: bool = Field(True, description="Require an API key (Authorization: Bearer ...).")
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="How long a successful key check is remembered in memory."
    )
    max_batch: int = Field(32, ge=1, le=4096, description="Most texts in one model call.")
    max_wait_ms: float = Field(
        5.0, ge=0, le=10_000, description="How long a batch waits for more requests."
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted.")
    max_texts: int = Field(64, ge=1, description="Most texts in one classify request.")
    max_text_chars: int = Field(20_000, ge=1, description="Longest text accepted.")
    reload_interval: float = Field(
        2.0, gt=0, description="Seconds between checks for a new champion (hot swap)."
    )
    log_max_backlog: int = Field(
        10_000,
        ge=1,
        description="Predictions waiting for the store beyond which classify answers 503.",
    )
    log_wait_seconds: float = Field(
        5.0,
        gt=0,
        description="How long classify waits for its predictions to be stored before "
        "answering 503 (a prediction is stored before it is answered).",
    )
    log_linger_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="How long the prediction writer waits for more requests to share a "
        "commit (the answers wait for that commit).",
    )
    shadow_queue: int = Field(
        1024, ge=1, description="Requests waiting for shadow scoring before new ones are dropped."
    )
    drain_seconds: float = Field(
        30.0, gt=0, description="How long shutdown keeps retrying unsaved predictions."
    )
    graceful_shutdown_seconds: float = Field(
        30.0, gt=0, description="How long SIGTERM waits for requests in flight."
    )
    log_level: str = Field("info", description="uvicorn log level.")

    @field_validator("shadows", mode="before")
    @classmethod
    def _parse_shadows(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(parse_shadow(v) if isinstance(v, str) else v for v in value)
        return value


def parse_shadow(ref: str) -> tuple[str, int]:
    """``FEATURE:VERSION`` -> (feature, version); the version is required."""
    feature, version = parse_version_ref(ref)
    if version is None:
        raise SettingsError(f"--shadow needs FEATURE:VERSION, e.g. review-sentiment:3, got {ref!r}")
    return feature, version


def make_config(**values: object) -> ServeConfig:
    """A validated ServeConfig, or a SettingsError in one line."""
    try:
        return ServeConfig(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(f"serve: {describe_validation_error(exc, ServeConfig)}") from None
