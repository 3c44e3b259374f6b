"""Shared fixtures: every test gets its own FLYWHEEL_HOME and SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def flywheel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "flywheel-home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.delenv("FLYWHEEL_DB_URL", raising=False)
    monkeypatch.delenv("FLYWHEEL_ALLOW_DOWNLOAD", raising=False)
    return home


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
