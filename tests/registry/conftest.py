"""Registry fixtures: every test runs against SQLite (a temp file) and PostgreSQL.

PostgreSQL gets a fresh, uniquely named database per test session on the server at
``COLDBREW_TEST_POSTGRES_URL`` (default below), dropped at the end; each test gets an empty
schema in it. If the server is unreachable the PostgreSQL cases skip, unless
``COLDBREW_REQUIRE_SERVICES=1`` (CI), where they fail instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from coldbrew.registry import Registry


def _reset_postgres(url: str) -> None:
    """Empty the session database, so each test starts from no schema at all."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database (no tables), one per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def make_registry(registry_url: str) -> Iterator[Callable[[], Registry]]:
    """Factory of unmigrated registries on the test's database; all closed at teardown."""
    made: list[Registry] = []

    def make() -> Registry:
        made.append(Registry(registry_url))
        return made[-1]

    yield make
    for registry in made:
        registry.close()


@pytest.fixture
def registry(make_registry: Callable[[], Registry]) -> Registry:
    """A migrated, empty registry."""
    reg = make_registry()
    reg.migrate()
    return reg
