"""An auth-on server per module, keys made straight in its registry, and a tiny handler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew.registry.security import SecurityStore
from coldbrew.security.keyring import Keyring, KeySpec
from support import Server, write_bundle

HANDLER = """
import os

def handler(event, context):
    return {"ok": True, "env": sorted(k for k in os.environ if k.startswith("COLDBREW")),
            "cwd": os.getcwd(), "tmp": os.environ.get("TMPDIR")}
"""


class SecureServer(Server):
    def make_key(self, role: str, functions: tuple[str, ...] = ("*",), **limits: Any) -> str:
        store = SecurityStore(f"sqlite:///{self.home / 'registry.db'}")
        try:
            return Keyring(store).create(KeySpec(role=role, functions=functions, **limits))[1]
        finally:
            store.close()

    def as_(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def deploy(server: SecureServer, admin: str, name: str, folder: Path) -> None:
    with server.as_(admin) as client:
        from support import pack_folder

        response = client.post(
            "/v1/functions",
            data={"name": name},
            files={"file": ("bundle.tar.gz", pack_folder(folder))},
        )
        assert response.status_code == 201, response.text


@contextlib.contextmanager
def running_secure_server(home: Path, env: dict[str, str] | None = None) -> Iterator[SecureServer]:
    """An auth-on server (JWT secret set, no bootstrap key from the environment)."""
    server = SecureServer(
        home,
        env={
            "COLDBREW_AUTH": "on",
            "COLDBREW_JWT_SECRET": "test-jwt-secret-that-is-long-enough-0123456789",
            "COLDBREW_API_KEY": "",
            **(env or {}),
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secure(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureServer]:
    """One per module, with the module's ``SERVER_ENV`` (a dict) added to its env."""
    env = getattr(request.module, "SERVER_ENV", None)
    with running_secure_server(tmp_path_factory.mktemp("secure"), env) as server:
        yield server


@pytest.fixture(scope="module")
def admin(secure: SecureServer) -> str:
    return secure.make_key("admin")


@pytest.fixture(scope="module")
def deployed(secure: SecureServer, admin: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("bundle")
    write_bundle(folder, HANDLER, 'handler = "handler:handler"\n')
    for name in ("alpha", "beta"):
        deploy(secure, admin, name, folder)
