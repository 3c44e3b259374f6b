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
