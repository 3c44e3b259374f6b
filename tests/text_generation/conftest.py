from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gen_world import build_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny chat LM and a tiny base LM (no template), built once."""
    return {
        "chat": build_model(tmp_path_factory.mktemp("tiny-chat"), chat=True),
        "plain": build_model(tmp_path_factory.mktemp("tiny-plain"), chat=False),
    }
