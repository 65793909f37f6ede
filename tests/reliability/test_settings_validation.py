"""Settings are typed values: a bad ``COLDBREW_*`` value stops ``coldbrew serve`` at once, with
one paragraph naming the variable, the value and what is allowed; good values still work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coldbrew.settings import InvalidSettings, Settings
from support import Server, free_port

BAD = [
    ("COLDBREW_AUTH", "required", "'auto', 'on' or 'off'"),
    ("COLDBREW_AUTH", "enabled", "'auto', 'on' or 'off'"),
    ("COLDBREW_PICKLE_POLICY", "never", "'auto', 'refuse' or 'allow'"),
    ("COLDBREW_MEMORY_ENFORCEMENT", "cgroups", "'auto', 'cgroup', 'rss' or 'off'"),
    ("COLDBREW_PRICE_TABLE", "gcp", "'aws-x86', 'aws-arm64' or 'custom'"),
    ("COLDBREW_PRICE_TABLE", "custom", "COLDBREW_PRICE_TABLE_CUSTOM"),
    ("COLDBREW_LOG_FORMAT", "yaml", "'json' or 'text'"),
    ("COLDBREW_LOG_LEVEL", "verbose", "'info'"),
    ("COLDBREW_MAX_PAYLOAD_BYTES", "-1", "greater than 0"),
    ("COLDBREW_MAX_BUNDLE_BYTES", "0", "greater than 0"),
    ("COLDBREW_PORT", "70000", "65535"),
    ("COLDBREW_PORT", "0", "greater than or equal to 1"),
    ("COLDBREW_REAP_INTERVAL_S", "0", "greater than 0"),
    ("COLDBREW_REAP_INTERVAL_S", "nan", "finite"),
    ("COLDBREW_HEADER_TIMEOUT_S", "-5", "greater than 0"),
    ("COLDBREW_ALERT_ERROR_RATE", "2", "less than or equal to 1"),
    ("COLDBREW_SPARES", "maybe", "boolean"),
    ("COLDBREW_PRELOAD_MODULES", "numpy", "JSON"),
    ("COLDBREW_TRUSTED_PROXIES", '["10.0.0.0/33"]', "10.0.0.0/33"),
    ("COLDBREW_TLS_CERT", "/nonexistent/cert.pem", "file"),
    ("COLDBREW_ARTIFACT_KEY", "c2hvcnQ=", "32 bytes"),
    ("COLDBREW_URL", "localhost:8080", "http://"),
    ("COLDBREW_ALERT_WEBHOOKS", '["ftp://hooks.example"]', "https://"),
    ("COLDBREW_REDIS_URL", "http://user:secret@redis.example", "redis://"),
]
SECRETS = ("COLDBREW_ARTIFACT_KEY", "COLDBREW_REDIS_URL")

GOOD = [
    ("COLDBREW_AUTH", "ON", "auth", "on"),
    ("COLDBREW_AUTH", "Off", "auth", "off"),
    ("COLDBREW_AUTH", "true", "auth", "on"),
    ("COLDBREW_AUTH", "no", "auth", "off"),
    ("COLDBREW_AUTH", "auto", "auth", "auto"),
    ("COLDBREW_PICKLE_POLICY", "Refuse", "pickle_policy", "refuse"),
    ("COLDBREW_MEMORY_ENFORCEMENT", "RSS", "memory_enforcement", "rss"),
    ("COLDBREW_PRICE_TABLE", "aws-arm64", "price_table", "aws-arm64"),
    ("COLDBREW_LOG_FORMAT", "JSON", "log_format", "json"),
    ("COLDBREW_PORT", "65535", "port", 65535),
    ("COLDBREW_MAX_PAYLOAD_BYTES", "1", "max_payload_bytes", 1),
    ("COLDBREW_HEADER_TIMEOUT_S", "0.5", "header_timeout_s", 0.5),
]


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDBREW_")}
    return {**env, "COLDBREW_HOME": str(tmp_path), "COLDBREW_PORT": str(free_port())}


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("COLDBREW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("COLDBREW_HOME", str(tmp_path))


@pytest.mark.parametrize(("variable", "value", "allowed"), BAD)
def test_settings_refuse_bad_values(
    clean_environ: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettings) as caught:
        Settings()
    message = caught.value.message
    assert variable in message and allowed in message
    assert "\n" not in message
    if variable not in SECRETS:
        assert value in message
    else:
        assert value not in message and "secret" not in message  # never echoed


@pytest.mark.parametrize(("variable", "value", "field", "expected"), GOOD)
def test_settings_accept_good_values(
    clean_environ: None,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    field: str,
    expected: object,
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), field) == expected


def test_auth_words_mean_what_they_say(
    clean_environ: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: ``COLDBREW_AUTH=ON`` used to mean *off* on loopback."""
    for word in ("ON", "on", "true", "yes", "1"):
        monkeypatch.setenv("COLDBREW_AUTH", word)
        assert Settings(host="127.0.0.1").auth_enabled(), word
    for word in ("OFF", "false", "0"):
        monkeypatch.setenv("COLDBREW_AUTH", word)
        assert not Settings(host="0.0.0.0").auth_enabled(), word


def test_overrides_are_validated_too(clean_environ: None) -> None:
    with pytest.raises(InvalidSettings, match="COLDBREW_PORT='0'"):
        Settings(port=0)


def _coldbrew() -> list[str]:
    found = shutil.which("coldbrew", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "coldbrew.cli.main"]


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [BAD[0], BAD[3], BAD[8], BAD[10], BAD[17]],
    ids=lambda v: str(v)[:24],
)
def test_serve_stops_at_once_naming_the_variable(
    tmp_path: Path, variable: str, value: str, allowed: str
) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [*_coldbrew(), "serve"],
        env={**_clean_env(tmp_path), variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 30
    assert variable in done.stderr and allowed in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_auth_on_in_capitals_turns_auth_on(tmp_path: Path) -> None:
    """End to end: with ``COLDBREW_AUTH=ON`` on loopback an anonymous caller is refused."""
    server = Server(tmp_path, env={"COLDBREW_AUTH": "ON", "COLDBREW_API_KEY": ""})
    server.start()
    try:
        answer = server.client.get("/v1/keys")
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "UNAUTHORIZED"
    finally:
        server.stop()
