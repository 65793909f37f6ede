"""Who may do what with async invocations, on an auth-on server: every new endpoint for every
role. Scoped keys cover ``alpha`` only; ``beta`` must look like a function that does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew.registry.security import SecurityStore
from coldbrew.security.keyring import Keyring, KeySpec
from support import Server, pack_folder, write_bundle

ROLES = ("none", "admin", "deployer", "invoker", "viewer")
CONFIG = "/2019-09-25/functions/{}/event-invoke-config"
SCHEDULE = {"name": "nightly", "expression": "cron(0 3 * * ? *)"}
# (method, path, body) -> expected status for none, admin, deployer, invoker, viewer; rows run
# in order, roles in order (None: not checked, e.g. the answer depends on an earlier role).
MATRIX: list[tuple[str, str, Any, tuple[int | None, ...]]] = [
    ("POST", "/v1/functions/alpha/invoke?async=1", {}, (401, 202, 202, 202, 403)),
    ("POST", "/v1/functions/beta/invoke?async=1", {}, (401, 202, 404, 404, 404)),
    ("GET", "/v1/functions/alpha/events", None, (401, 200, 200, 200, 200)),
    ("GET", "/v1/functions/beta/events", None, (401, 200, 404, 404, 404)),
    ("GET", "/v1/functions/alpha/dlq", None, (401, 200, 200, 200, 200)),
    ("GET", "/v1/functions/beta/dlq", None, (401, 200, 404, 404, 404)),
    ("GET", "/v1/functions/alpha/dlq/nope", None, (401, 404, 404, 404, 404)),
    ("POST", "/v1/functions/alpha/dlq/redrive", {}, (401, 200, 200, 403, 403)),
    ("POST", "/v1/functions/beta/dlq/redrive", {}, (401, 200, 404, 404, 404)),
    ("DELETE", "/v1/functions/alpha/dlq", None, (401, 200, 200, 403, 403)),
    ("GET", "/v1/functions/alpha/results", None, (401, 200, 200, 200, 200)),
    ("DELETE", "/v1/functions/alpha/results", None, (401, 200, 200, 403, 403)),
    ("POST", "/v1/functions/alpha/schedules", SCHEDULE, (401, 201, 409, 403, 403)),
    ("POST", "/v1/functions/beta/schedules", SCHEDULE, (401, 201, 404, 404, 404)),
    ("GET", "/v1/functions/alpha/schedules", None, (401, 200, 200, 200, 200)),
    ("GET", "/v1/schedules", None, (401, 200, 200, 200, 200)),
    ("DELETE", "/v1/functions/beta/schedules/other", None, (401, 404, 404, 404, 404)),
    ("PUT", CONFIG.format("alpha"), {"MaximumRetryAttempts": 1}, (401, 200, 200, 403, 403)),
    ("PUT", CONFIG.format("beta"), {"MaximumRetryAttempts": 1}, (401, 200, 404, 404, 404)),
    ("POST", CONFIG.format("alpha"), {"MaximumRetryAttempts": 0}, (401, 200, 200, 403, 403)),
    ("GET", CONFIG.format("alpha"), None, (401, 200, 200, 200, 200)),
    ("GET", CONFIG.format("beta") + "/list", None, (401, 200, 404, 404, 404)),
    ("DELETE", CONFIG.format("beta"), None, (401, 204, 404, 404, 404)),
]


class _Secure(Server):
    def make_key(self, role: str, functions: tuple[str, ...] = ("*",)) -> str:
        store = SecurityStore(f"sqlite:///{self.home / 'registry.db'}")
        try:
            return Keyring(store).create(KeySpec(role=role, functions=functions))[1]
        finally:
            store.close()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("secure-async")
    server = _Secure(home, {"COLDBREW_AUTH": "on", "COLDBREW_API_KEY": ""})
    try:
        server.start()
        tokens: dict[str, Any] = {"none": None, "admin": server.make_key("admin")}
        for role in ("deployer", "invoker", "viewer"):
            tokens[role] = server.make_key(role, ("alpha",))
        folder = write_bundle(
            Path(tmp_path_factory.mktemp("b")),
            "def handler(e, c):\n    return 1\n",
            "handler = 'handler:handler'\n",
        )
        for name in ("alpha", "beta"):
            response = httpx.post(
                f"{server.url}/v1/functions",
                data={"name": name},
                files={"file": ("b.tar.gz", pack_folder(folder))},
                headers={"Authorization": f"Bearer {tokens['admin']}"},
                timeout=60,
            )
            assert response.status_code == 201, response.text
        yield server, tokens
    finally:
        server.stop()


def test_every_role_on_every_async_endpoint(secure: tuple[Server, dict[str, Any]]) -> None:
    server, tokens = secure
    wrong = []
    for method, path, body, expected in MATRIX:
        for role, status in zip(ROLES, expected, strict=True):
            token = tokens[role]
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = httpx.request(
                method, server.url + path, json=body, headers=headers, timeout=30
            )
            if status is not None and response.status_code != status:
                wrong.append(f"{role} {method} {path}: {response.status_code} != {status}")
    assert not wrong, "\n".join(wrong)


def test_schedule_list_shows_only_the_scope(secure: tuple[Server, dict[str, Any]]) -> None:
    server, tokens = secure
    seen = {}
    for role in ("admin", "viewer"):
        response = httpx.get(
            f"{server.url}/v1/schedules",
            headers={"Authorization": f"Bearer {tokens[role]}"},
            timeout=30,
        )
        seen[role] = {s["function"] for s in response.json()["schedules"]}
    assert seen["admin"] == {"alpha", "beta"} and seen["viewer"] == {"alpha"}
