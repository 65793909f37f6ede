"""Secrets end to end: set by the real CLI, injected into a real instance, rotated, removed; and
the value found in no output (HTTP answers, CLI output, boto3, logs, every file of the home)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from coldbrew import errors
from coldbrew.registry import Registry
from coldbrew.registry.secrets import SecretTable
from coldbrew.security.secrets import SecretCipher, Secrets, SecretUnreadable, load_key
from coldbrew.settings import Settings
from support import Server, write_bundle

HANDLER = """
import hashlib, os

AT_IMPORT = hashlib.sha256(os.environ.get("DB_URL", "").encode()).hexdigest()
print("handler imported; DB_URL set:", "DB_URL" in os.environ)

def handler(event, context):
    print("invoked; token set:", "API_TOKEN" in os.environ)
    return {
        "sha": hashlib.sha256(os.environ["DB_URL"].encode()).hexdigest(),
        "at_import": AT_IMPORT,
        "token_sha": hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest(),
        "level": os.environ["LEVEL"],
    }
"""

CONFIG = """
handler = "handler:handler"

[environment]
LEVEL = "debug"
API_TOKEN = "{token}"

[secrets]
DB_URL = "shop-db"
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cli(server: Server, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", *args, "--url", server.url],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, "COLDBREW_HOME": str(server.home)},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("secrets-home"))
    running.start()
    yield running
    running.stop()


def _wait_for(server: Server, name: str, want: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = server.invoke(name, {}).json()
        if body.get("sha") == want and body.get("at_import") == want:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"instances never saw the rotated value: {body}")
        time.sleep(0.2)


def test_secrets_reach_instances_and_no_output(server: Server, tmp_path: Path) -> None:
    first = f"postgresql://app:{uuid.uuid4().hex}@db.internal/shop"
    second = f"postgresql://app:{uuid.uuid4().hex}@db.internal/shop"
    token = f"tok-{uuid.uuid4().hex}"
    outputs: list[str] = []

    done = cli(server, "secrets", "set", "shop-db", stdin=first.encode() + b"\n")
    assert done.returncode == 0, done.stderr
    outputs += [done.stdout.decode(), done.stderr.decode()]
    assert "generation 1" in done.stdout.decode()

    bundle = write_bundle(tmp_path / "fn", HANDLER, CONFIG.format(token=token))
    deployed = server.deploy_folder("shop", bundle)
    assert deployed.status_code == 201, deployed.text
    outputs.append(deployed.text)

    body = server.invoke("shop", {}).json()
    assert body["sha"] == sha(first)  # the trailing newline of stdin is not the secret's
    assert body["at_import"] == sha(first)  # module-level code (the version template) has it
    assert body["token_sha"] == sha(token) and body["level"] == "debug"

    # Rotation: same name again; the instances and the version template are replaced.
    value_file = tmp_path / "value.txt"
    value_file.write_text(second + "\n")
    done = cli(server, "secrets", "set", "shop-db", "--from-file", str(value_file))
    assert done.returncode == 0, done.stderr
    assert "generation 2" in done.stdout.decode() and "shop:1" in done.stdout.decode()
    outputs += [done.stdout.decode(), done.stderr.decode()]
    _wait_for(server, "shop", sha(second))

    # Every place a value could leak to.
    for path in (
        "/v1/functions/shop",
        "/v1/functions/shop/versions",
        "/v1/secrets",
        "/v1/audit",
        "/2015-03-31/functions/shop",
        "/metrics",
    ):
        answer = server.client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        outputs.append(answer.text)
    described = json.loads(server.client.get("/v1/functions/shop").text)
    config = described["versions"][0]["config"]
    assert config["secrets"] == {"DB_URL": "shop-db"}  # names stay visible
    assert config["environment"] == {"LEVEL": "debug", "API_TOKEN": "********"}
    lam = boto3.client(
        "lambda",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="y",
    )
    variables = lam.get_function(FunctionName="shop")["Configuration"]["Environment"]["Variables"]
    assert variables == {"LEVEL": "debug", "API_TOKEN": "********"}
    outputs.append(json.dumps(variables))
    for args in (("info", "shop", "--json"), ("info", "shop"), ("secrets", "ls")):
        done = cli(server, *args)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout.decode(), done.stderr.decode()]
    assert "shop-db" in outputs[-2]

    for text in outputs:
        for value in (first, second, token):
            assert value not in text
    audit = server.client.get("/v1/audit").json()["events"]
    assert {"secret.set"} <= {e["action"] for e in audit}

    # Every byte the gateway wrote: registry (and its WAL), logs (function, template, server).
    files = [p for p in server.home.rglob("*") if p.is_file()]
    assert any(p.name.startswith("registry.db") for p in files)
    assert any("functions" in p.parts for p in files)  # the function's own log
    for path in files:
        data = path.read_bytes()
        for value in (first, second):
            assert value.encode() not in data, path
    key_file = server.home / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_missing_secret_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    done = cli(server, "secrets", "set", "gone-soon", stdin=b"v")
    assert done.returncode == 0, done.stderr
    done = cli(server, "secrets", "rm", "gone-soon")
    assert done.returncode == 0 and "gone-soon" not in cli(server, "secrets", "ls").stdout.decode()
    config = 'handler = "handler:handler"\n[secrets]\nDB_URL = "gone-soon"\n'
    answer = server.deploy_folder("orphan", write_bundle(tmp_path / "o", HANDLER, config))
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "SECRET_NOT_FOUND"
    assert cli(server, "secrets", "rm", "gone-soon").returncode == 1
    bad = server.client.put("/v1/secrets/bad%20name", content=b"x")
    assert bad.status_code == 400
    empty = server.client.put("/v1/secrets/empty", content=b"")
    assert empty.status_code == 400


# --- the cipher and the key, without a server -----------------------------------------------


@pytest.fixture
def table(tmp_path: Path) -> Iterator[SecretTable]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry(url)
    registry.migrate()
    registry.close()
    made = SecretTable(url)
    yield made
    made.close()


def test_stored_encrypted_bound_to_name_and_key(table: SecretTable) -> None:
    secrets = Secrets(table, lambda: b"k" * 32)
    secrets.set("a", b"alpha-value")
    secrets.set("b", b"beta-value")
    row_a, row_b = table.get("a"), table.get("b")
    assert row_a and row_b and b"alpha-value" not in row_a["ciphertext"]
    assert secrets.environment({"secrets": {"X": "a"}}) == {"X": "alpha-value"}
    # A ciphertext moved onto another name does not decrypt.
    table.put("b", row_a["ciphertext"], row_a["key_id"])
    secrets.forget("b")
    with pytest.raises(SecretUnreadable):
        secrets.value("b")
    # Another key: said plainly.
    other = Secrets(table, lambda: b"o" * 32)
    with pytest.raises(SecretUnreadable, match="another key"):
        other.value("a")
    assert [r["name"] for r in secrets.list()] == ["a", "b"]
    assert "ciphertext" not in secrets.list()[0]
    with pytest.raises(errors.NotFound):
        secrets.remove("missing")


def test_key_file_made_once_with_0600(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert not (tmp_path / "secrets.key").exists()
    key = load_key(settings)
    assert len(key) == 32 and load_key(settings) == key
    assert stat.S_IMODE((tmp_path / "secrets.key").stat().st_mode) == 0o600
    chosen = Settings(home=tmp_path, secrets_key=base64.b64encode(b"A" * 32).decode())
    assert load_key(chosen) != key
    assert SecretCipher(key).open("n", SecretCipher(key).seal("n", b"v")) == b"v"


def test_secrets_endpoints_are_admin_only() -> None:
    from coldbrew.gateway.app import table

    classify = table().classify

    for method, path in (
        ("GET", "/v1/secrets"),
        ("PUT", "/v1/secrets/a"),
        ("DELETE", "/v1/secrets/a"),
    ):
        rule = classify(method, path)
        assert (rule.kind, rule.permission) == ("admin", "admin")
    assert classify("PUT", "/v1/secrets/a").audit == "secret.set"
