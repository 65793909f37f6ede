"""From outside, as an attacker would: forged, expired and confused tokens, foreign and
revoked keys, path tricks, oversized headers. Every answer is 401/403/404 JSON, no traceback."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from security.conftest import SecureServer  # by path: several folders have a conftest.py

SECRET = "test-jwt-secret-that-is-long-enough-0123456789"


def _token(claims: dict, key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode({"exp": time.time() + 300, **claims}, key, algorithm=alg)


def _none_token(claims: dict) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'exp': time.time() + 300, **claims})}."


def _check(
    secure: SecureServer,
    token: str | None,
    expected: int,
    path: str = "/v1/functions/alpha/invoke",
    **headers: str,
) -> None:
    with secure.as_(token) as client:
        response = client.post(path, json={}, headers=headers)
    assert response.status_code == expected, response.text[:300]
    assert "Traceback" not in response.text
    assert response.json()["error"]["code"] in ("UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND")


def test_valid_jwt_is_scoped(secure: SecureServer, deployed: None) -> None:
    good = _token({"sub": "alice", "role": "invoker", "functions": ["alp*"]})
    with secure.as_(good) as client:
        assert client.post("/v1/functions/alpha/invoke", json={}).status_code == 200
    _check(secure, good, 404, "/v1/functions/beta/invoke")
    viewer = _token({"sub": "v", "role": "viewer", "functions": "alpha"})
    _check(secure, viewer, 403)


@pytest.mark.parametrize(
    "token",
    [
        _token({"sub": "x", "role": "admin"}, key="wrong-secret-wrong-secret-wrong-secret"),
        _token({"sub": "x", "role": "admin", "exp": time.time() - 3600}),
        _none_token({"sub": "x", "role": "admin"}),
        jwt.encode({"sub": "x", "role": "admin"}, SECRET, algorithm="HS256"),  # no exp
        _token({"sub": "x", "role": "root"}),
        _token({"sub": "x", "role": "admin"}, key=SECRET, alg="HS512"),
        "cb_000000000000_" + "A" * 43,  # well-formed, unknown key
        "cb_garbage",
        "not-a-token",
        "a.b.c",
    ],
)
def test_forged_tokens_get_401(secure: SecureServer, token: str) -> None:
    _check(secure, token, 401)


def test_hs_rs_confusion_is_refused(secure: SecureServer) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT"}
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    body = {"sub": "x", "role": "admin", "exp": time.time() + 300}
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(public_pem, signing.encode(), hashlib.sha256).digest()
    _check(secure, f"{signing}.{b64(signature)}", 401)
    rs = jwt.encode(body, private, algorithm="RS256")  # no JWKS configured: refused
    _check(secure, rs, 401)


def test_keys_for_another_function_and_tampered_secret(
    secure: SecureServer, deployed: None
) -> None:
    other = secure.make_key("invoker", ("beta",))
    _check(secure, other, 404)
    _check(secure, other[:-4] + "AAAA", 401)
    _check(secure, None, 401, **{"X-Api-Key": other[:-1]})


@pytest.mark.parametrize(
    "path",
    [
        "/v1/functions/../v1/keys",
        "/v1/functions/%2e%2e/invoke",
        "/v1/functions/beta%2Finvoke",
        "/v1/functions/bet%61/invoke",
        "/v1/functions/beta:1/invoke",
        "/v1/functions/*/invoke",
        "/2015-03-31/functions/function:beta:1/invocations",
    ],
)
def test_path_tricks(secure: SecureServer, deployed: None, path: str) -> None:
    scoped = secure.make_key("invoker", ("alpha",))
    with secure.as_(scoped) as client:
        response = client.post(path, json={})
    assert response.status_code in (403, 404), (path, response.text[:200])
    assert "Traceback" not in response.text and response.json()["error"]["code"]


def test_oversized_credentials(secure: SecureServer) -> None:
    _check(secure, "cb_" + "A" * 20_000, 401)
    _check(secure, None, 401, Authorization="Bearer " + "x." * 6000)


def test_ip_allowlist(secure: SecureServer, deployed: None) -> None:
    fenced = secure.make_key("invoker", ("alpha",), ip_allowlist=("10.0.0.0/8",))
    _check(secure, fenced, 403)
    spoof = {"X-Forwarded-For": "10.1.2.3"}  # the peer is not a trusted proxy: ignored
    _check(secure, fenced, 403, **spoof)
    home = secure.make_key("invoker", ("alpha",), ip_allowlist=("127.0.0.0/8",))
    with secure.as_(home) as client:
        assert client.post("/v1/functions/alpha/invoke", json={}).status_code == 200
