"""Runtime settings (not part of a recipe): where state lives and what may be fetched.

Read through ``get_settings()`` at call time, never at import, so tests and processes
can change the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aiflywheel.errors import SettingsError


class Settings(BaseSettings):
    """Environment variables prefixed ``FLYWHEEL_``."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    home: Path = Field(
        default=Path(".flywheel"),
        description="Directory for runs, caches and the default SQLite store (FLYWHEEL_HOME).",
    )
    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store (FLYWHEEL_DB_URL); default SQLite under home.",
    )
    allow_download: bool = Field(
        default=False,
        description="Allow fetching models from a hub (FLYWHEEL_ALLOW_DOWNLOAD=1).",
    )

    lock_wait: float = Field(
        default=0.0,
        ge=0,
        description="Seconds a run waits for another run on the same feature to finish before "
        "it stops with an error naming that run (FLYWHEEL_LOCK_WAIT); 0 stops at once.",
    )

    price_cpu_core_hour: float = Field(
        default=0.04,
        description="Price of one CPU core for an hour, in the currency of the price table "
        "(FLYWHEEL_PRICE_CPU_CORE_HOUR); used by `flywheel plan`.",
    )
    price_gpu_hour: float = Field(
        default=2.5,
        description="Price of one GPU for an hour (FLYWHEEL_PRICE_GPU_HOUR).",
    )
    price_llm_per_1k_tokens: float = Field(
        default=0.002,
        description="An LLM API's price per 1,000 tokens, prompt and completion together "
        "(FLYWHEEL_PRICE_LLM_PER_1K_TOKENS).",
    )
    llm_tokens_per_request: int = Field(
        default=800,
        description="Tokens one assistant answer is assumed to use through an LLM API, "
        "prompt and completion (FLYWHEEL_LLM_TOKENS_PER_REQUEST); the plan shows it.",
    )
    gpu_speedup: float = Field(
        default=20.0,
        description="How many CPU cores one GPU is assumed to replace for a version timed "
        "on CPU only (FLYWHEEL_GPU_SPEEDUP); the plan shows it.",
    )
    prices_file: Path | None = Field(
        default=None,
        description="A YAML or JSON file with any of price_cpu_core_hour, price_gpu_hour, "
        "price_llm_per_1k_tokens, llm_tokens_per_request, gpu_speedup "
        "(FLYWHEEL_PRICES_FILE); its values win over the environment's.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Paths stored in the store (model folders) must not depend on the working directory.
        return value.expanduser().absolute()

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def store_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.home / 'flywheel.db').as_posix()}"


def get_settings() -> Settings:
    """Read settings from the environment now."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "FLYWHEEL_" + "_".join(str(p) for p in first["loc"]).upper()
        raise SettingsError(f"{name}: {first['msg']}, got {first.get('input')!r}") from None
