"""JWT claims are type-checked: a signed token whose ``exp`` is a string, whose role is an object
or whose function scopes are numbers is refused with 401 UNAUTHORIZED, never accepted or a 500."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from coldbrew.security.errors import Unauthorized
from coldbrew.security.tokens import JwtConfig, JwtVerifier

if TYPE_CHECKING:  # a runtime import would pick whichever conftest was loaded first
    from conftest import SecureServer

SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
LATER = int(time.time()) + 3600
VERIFIER = JwtVerifier(JwtConfig(secret=SECRET))


def _signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


DROP = object()
"""Marks a claim to leave out of the token."""


def _valid(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "alice", "role": "invoker", "functions": ["alpha"]}
    claims["exp"] = LATER
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not DROP}


MALFORMED = [
    ("exp as a string", _valid(exp=str(LATER)), "'exp'"),
    ("exp as a boolean", _valid(exp=True), "'exp'"),
    ("exp as a list", _valid(exp=[LATER]), "'exp'"),
    ("exp as an object", _valid(exp={"at": LATER}), "'exp'"),
    ("nbf as a string", _valid(nbf="0"), "'nbf'"),
    ("exp as Infinity", _valid(exp=float("inf")), "'exp'"),
    ("iat as a string", _valid(iat=str(int(time.time()))), "'iat'"),
    ("iat as null", _valid(iat=None), "'iat'"),
    ("role as an object", _valid(role={"name": "admin"}), "'role'"),
    ("role as a number", _valid(role=1), "'role'"),
    ("role missing", _valid(role=DROP), "'role'"),
    ("role list of non-strings", _valid(role=[{"admin": True}]), "'role'"),
    ("unknown role", _valid(role="root"), "'role'"),
    ("functions as a number", _valid(functions=7), "'functions'"),
    ("functions as an object", _valid(functions={"alpha": True}), "'functions'"),
    ("functions with non-strings", _valid(functions=["alpha", 3]), "'functions'"),
    ("sub as an object", _valid(sub={"id": 1}), "Subject"),  # PyJWT checks this one
]


@pytest.mark.parametrize(("case", "claims", "named"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_claims_are_refused(case: str, claims: dict[str, Any], named: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        VERIFIER.verify(_signed(claims))
    assert named in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    "claims",
    [
        _valid(),
        _valid(exp=LATER + 0.5, iat=time.time(), nbf=int(time.time()) - 5),
        _valid(functions="alpha, beta"),
        _valid(functions=DROP),
        _valid(role=["viewer", "deployer"]),  # a list of role names: the most powerful wins
        _valid(sub=DROP),
    ],
)
def test_well_typed_claims_are_accepted(claims: dict[str, Any]) -> None:
    principal = VERIFIER.verify(_signed(claims))
    assert principal.role in ("invoker", "deployer")


def test_string_exp_is_not_a_long_lived_token() -> None:
    """The attack: PyJWT reads ``"exp": "9999999999"`` with int() and accepts it."""
    token = _signed(_valid(exp="9999999999"))
    jwt.decode(token, SECRET, algorithms=["HS256"])  # PyJWT alone lets it through
    with pytest.raises(Unauthorized, match="'exp' claim must be a number"):
        VERIFIER.verify(token)


@pytest.mark.parametrize(
    "claims",
    [
        _valid(exp=str(LATER), role="admin", functions=["*"]),
        _valid(role={"name": "admin"}),
        _valid(functions=123),
    ],
    ids=["string exp", "object role", "number functions"],
)
def test_over_http_malformed_claims_get_401(secure: SecureServer, claims: dict[str, Any]) -> None:
    with secure.as_(_signed(claims)) as client:
        response = client.get("/v1/functions")
    assert response.status_code == 401, response.text[:300]
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert "Traceback" not in response.text


def test_over_http_a_well_typed_token_works(secure: SecureServer) -> None:
    with secure.as_(_signed(_valid(role="viewer", functions="alpha"))) as client:
        response = client.get("/v1/functions")
    assert response.status_code == 200, response.text[:300]
    assert all(f["name"] == "alpha" for f in response.json()["functions"])
