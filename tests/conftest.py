"""Shared fixtures (helpers live in ``support.py``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from support import Server


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per test module, with the module's ``SERVER_ENV`` (a dict) added to its env."""
    running = Server(
        tmp_path_factory.mktemp("coldbrew-home"), getattr(request.module, "SERVER_ENV", None)
    )
    running.start()
    yield running
    running.stop()


SESSION_PREFIX = f"coldbrew-tests-{os.getuid()}-"


@pytest.hookimpl(tryfirst=True)  # before the tmp_path plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    """A base temporary folder of this session's own, unless --basetemp says otherwise.

    pytest resets ``/tmp/pytest-of-<user>`` to 0700 whenever a session starts, which takes the
    search permission that isolated functions (other uids) need to reach a server home under
    it: a second session started by hand would break the first one's servers. Folders of
    earlier sessions that have ended are removed; the last one stays for a look."""
    if config.option.basetemp:
        return
    root = Path(tempfile.gettempdir())
    ended = []
    for old in root.glob(f"{SESSION_PREFIX}*"):
        pid = old.name.removeprefix(SESSION_PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                ended.append((old.stat().st_mtime, old))
    for _, old in sorted(ended)[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = str(root / f"{SESSION_PREFIX}{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _services_required() -> bool:
    return os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a throwaway database, created for this test session and dropped after it."""
    admin_url = make_url(os.environ.get("COLDBREW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    admin = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"coldbrew_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL unreachable at {admin_url.render_as_string()}: {exc.orig}"
        if _services_required():
            pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
