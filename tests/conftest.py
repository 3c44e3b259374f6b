"""Shared fixtures: every test gets its own FLYWHEEL_HOME and store.

The store, loop and serve tests (``tests/test_store*.py``, ``test_loop*.py``,
``test_serve*.py``, ``tests/core/``) run twice: on SQLite under the home (``[sqlite]``)
and on a fresh database of a throwaway PostgreSQL cluster started once per session
(``[postgres]``, see ``tests/services/postgres.py``). When the cluster cannot start, the
Postgres leg fails; ``FLYWHEEL_TEST_POSTGRES=0`` skips it (for developers, never CI).
A test that only makes sense on one backend says so with ``@pytest.mark.sqlite_only``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.postgres import (
    OPT_OUT,
    PostgresCluster,
    PostgresUnavailable,
    opted_out,
    postgres_cluster,
)

FIXTURES = Path(__file__).parent / "fixtures"
TESTS = Path(__file__).parent
BACKENDS = ("sqlite", "postgres")


def has_postgres_leg(path: Path) -> bool:
    try:
        relative = path.resolve().relative_to(TESTS.resolve())
    except ValueError:
        return False
    return relative.parts[0] == "core" or relative.name.startswith(
        ("test_store", "test_loop", "test_serve")
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" not in metafunc.fixturenames:
        return
    if not has_postgres_leg(metafunc.definition.path):
        return
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        return
    metafunc.parametrize("store_backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresCluster]:
    """The session's throwaway PostgreSQL cluster (started on first use)."""
    if opted_out():
        pytest.skip(f"{OPT_OUT}=0: the Postgres leg is skipped")
    try:
        with postgres_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.fail(f"the Postgres leg cannot run: {exc}", pytrace=False)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres``: the store this test runs on."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(autouse=True)
def flywheel_home(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store_backend: str,
    request: pytest.FixtureRequest,
) -> Path:
    home = tmp_path / "flywheel-home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.delenv("FLYWHEEL_DB_URL", raising=False)
    monkeypatch.delenv("FLYWHEEL_ALLOW_DOWNLOAD", raising=False)
    if store_backend == "postgres":
        server: PostgresCluster = request.getfixturevalue("postgres_server")
        url = server.new_database()
        request.addfinalizer(lambda: server.drop_database(url))
        monkeypatch.setenv("FLYWHEEL_DB_URL", url)
    return home


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
