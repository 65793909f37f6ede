"""With auth on, a tenant's ``kind = "s3"`` source reaches only what the operator granted
(jobs/sources/access.py): its bucket and prefix, and its ``batch_output``, inside
``COLDBREW_S3_SOURCE_BUCKETS``; its ``endpoint_url`` the gateway's own or one of
``COLDBREW_S3_SOURCE_ENDPOINTS``. Unit checks of the rule, then one gateway with auth on and
moto's S3: a deployer's granted source delivers, the others send no request and say why in
``GET /v1/functions/{name}/sources`` (``coldbrew source ls``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew import errors
from coldbrew.jobs.sources.access import check_s3_source
from coldbrew.registry.security import SecurityStore
from coldbrew.runtime.config import S3SourceConfig
from coldbrew.security.keyring import Keyring, KeySpec
from coldbrew.settings import InvalidSettings, Settings
from support import Server, free_port, pack_folder, write_bundle

GATEWAY_S3 = "http://127.0.0.1:9000"


def _config(**fields: Any) -> S3SourceConfig:
    return S3SourceConfig.model_validate({"kind": "s3", "bucket": "inbox", **fields})


def _refusal(config: S3SourceConfig, env: dict[str, str]) -> str | None:
    try:
        check_s3_source(config, auth_enabled=True, environ=env)
    except errors.ValidationError as exc:
        return exc.message
    return None


def test_auth_off_checks_nothing() -> None:
    anywhere = _config(bucket="payroll", endpoint_url="http://169.254.169.254")
    check_s3_source(anywhere, auth_enabled=False, environ={})
    check_s3_source(anywhere, auth_enabled=False, environ={"COLDBREW_S3_SOURCE_BUCKETS": "inbox"})


def test_auth_on_without_the_variable_refuses_every_s3_source() -> None:
    said = _refusal(_config(), {})
    assert said is not None and "COLDBREW_S3_SOURCE_BUCKETS" in said and "auth is on" in said


def test_buckets_and_batch_output() -> None:
    env = {"COLDBREW_S3_SOURCE_BUCKETS": "inbox, scored"}
    assert _refusal(_config(prefix="in/"), env) is None
    assert "s3://payroll/ is not inside" in (_refusal(_config(bucket="payroll"), env) or "")
    batch = {"batch_job": True}
    assert _refusal(_config(batch_output="results/", **batch), env) is None  # its own bucket
    assert _refusal(_config(batch_output="s3://scored/daily/", **batch), env) is None
    said = _refusal(_config(batch_output="s3://payroll/x/", **batch), env) or ""
    assert said.startswith("batch_output s3://payroll/x/ is not inside COLDBREW_S3_SOURCE_BUCKETS")


def test_a_bucket_prefix_grants_only_keys_under_it() -> None:
    env = {"COLDBREW_S3_SOURCE_BUCKETS": "shared/team-a/"}
    assert _refusal(_config(bucket="shared", prefix="team-a/in/"), env) is None
    assert _refusal(_config(bucket="shared", prefix="team-b/"), env) is not None
    assert _refusal(_config(bucket="shared"), env) is not None  # the whole bucket
    inside = {"bucket": "shared", "prefix": "team-a/in/", "batch_job": True}
    assert _refusal(_config(batch_output="team-a/out/", **inside), env) is None
    assert _refusal(_config(batch_output="team-b/out/", **inside), env) is not None
    assert _refusal(_config(batch_output="s3://shared/out/", **inside), env) is not None


def test_endpoints() -> None:
    env = {"COLDBREW_S3_SOURCE_BUCKETS": "inbox", "COLDBREW_S3_ENDPOINT_URL": GATEWAY_S3}
    assert _refusal(_config(), env) is None  # boto3's own endpoint
    assert _refusal(_config(endpoint_url=GATEWAY_S3 + "/"), env) is None
    said = _refusal(_config(endpoint_url="http://169.254.169.254"), env) or ""
    assert "endpoint_url http://169.254.169.254 is neither" in said
    assert "COLDBREW_S3_SOURCE_ENDPOINTS" in said
    listed = {**env, "COLDBREW_S3_SOURCE_ENDPOINTS": "https://minio.internal:9000"}
    assert _refusal(_config(endpoint_url="https://MINIO.internal:9000"), listed) is None
    assert _refusal(_config(endpoint_url="https://minio.internal:9001"), listed) is not None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COLDBREW_S3_SOURCE_BUCKETS", "inbox,Not_A_Bucket"),
        ("COLDBREW_S3_SOURCE_ENDPOINTS", "minio.internal:9000"),
    ],
)
def test_a_malformed_entry_stops_the_settings(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettings, match=variable):
        Settings()


# --- one gateway with auth on ------------------------------------------------------------------
CONFIG = """handler = "handler:handler"

[[event_source]]
kind = "s3"
bucket = "{granted}"
prefix = "in/"
region = "us-east-1"
poll_s = 0.3

[[event_source]]
kind = "s3"
bucket = "{other}"
region = "us-east-1"
poll_s = 0.3

[[event_source]]
kind = "s3"
bucket = "{granted}"
prefix = "in/"
endpoint_url = "{elsewhere}"
region = "us-east-1"
poll_s = 0.3
"""


def test_a_deployer_reaches_only_granted_buckets(moto: str, tmp_path: Path) -> None:
    from s3_support import new_bucket

    s3, granted = new_bucket(moto)
    _, other = new_bucket(moto)
    s3.put_object(Bucket=granted, Key="in/a.json", Body=b"{}")
    s3.put_object(Bucket=other, Key="secret.json", Body=b"{}")
    server = Server(
        tmp_path / "home",
        {
            "COLDBREW_AUTH": "on",
            "COLDBREW_API_KEY": "",
            "COLDBREW_S3_ENDPOINT_URL": moto,  # the gateway's own: sources may use it unnamed
            "AWS_ENDPOINT_URL_S3": moto,
            "COLDBREW_S3_SOURCE_BUCKETS": granted,
            "COLDBREW_EVENT_SOURCE_SYNC_S": "0.3",
            "COLDBREW_PRELOAD_MODULES": "[]",
        },
    )
    try:
        server.start()
        store = SecurityStore(f"sqlite:///{server.home / 'registry.db'}")
        try:
            key = Keyring(store).create(KeySpec(role="deployer", functions=("alpha",)))[1]
        finally:
            store.close()
        headers = {"Authorization": f"Bearer {key}"}
        elsewhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would fail
        bundle = write_bundle(
            tmp_path / "alpha",
            "def handler(event, context):\n    return 1\n",
            CONFIG.format(granted=granted, other=other, elsewhere=elsewhere),
        )
        response = httpx.post(
            f"{server.url}/v1/functions",
            data={"name": "alpha"},
            files={"file": ("b.tar.gz", pack_folder(bundle))},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 201, response.text

        def sources() -> dict[str, dict[str, Any]]:
            listed = server.client.get("/v1/functions/alpha/sources", headers=headers)
            assert listed.status_code == 200, listed.text
            return {s["target"]: s for s in listed.json()["sources"]}

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen = sources()
            if len(seen) == 3 and all(s["delivered"] or s["last_error"] for s in seen.values()):
                break
            time.sleep(0.2)
        ok = seen[f"s3://{granted}/in/"]
        assert ok["delivered"] == 1 and ok["last_error"] is None, ok
        refused = seen[f"s3://{other}/"]
        assert refused["received"] == 0
        assert f"s3://{other}/ is not inside COLDBREW_S3_SOURCE_BUCKETS" in refused["last_error"]
        ssrf = seen[f"s3://{granted}/in/ at {elsewhere}"]
        assert ssrf["received"] == 0
        assert "COLDBREW_S3_SOURCE_ENDPOINTS" in ssrf["last_error"], ssrf
    finally:
        server.stop()
