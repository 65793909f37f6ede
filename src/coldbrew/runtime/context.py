"""A context object compatible with the AWS Lambda Python runtime's ``LambdaContext``.

Field names, types and formats follow awslambdaric so that handlers written for Lambda (and
libraries such as aws-lambda-powertools that read the context) run unchanged.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"


def function_arn(name: str, qualifier: str | None = None) -> str:
    return f"{ARN_PREFIX}{name}" + (f":{qualifier}" if qualifier else "")


@dataclass
class CognitoIdentity:
    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


@dataclass
class Client:
    installation_id: str | None = None
    app_title: str | None = None
    app_version_name: str | None = None
    app_version_code: str | None = None
    app_package_name: str | None = None


@dataclass
class ClientContext:
    client: Client | None = None
    custom: dict[str, Any] | None = None
    env: dict[str, Any] | None = None


def client_context_from(raw: dict[str, Any] | None) -> ClientContext | None:
    if raw is None:
        return None
    client = raw.get("client")
    return ClientContext(
        client=Client(**{k: client.get(k) for k in Client.__dataclass_fields__})
        if isinstance(client, dict)
        else None,
        custom=raw.get("custom"),
        env=raw.get("env"),
    )


def identity_from(raw: dict[str, Any] | None) -> CognitoIdentity | None:
    if raw is None:
        return None
    return CognitoIdentity(
        cognito_identity_id=raw.get("cognitoIdentityId"),
        cognito_identity_pool_id=raw.get("cognitoIdentityPoolId"),
    )


class LambdaContext:
    """What a handler receives as ``context``. ``model`` is coldbrew's addition: the model the
    runtime loaded from the config's ``model`` entry, or None."""

    def __init__(
        self,
        *,
        aws_request_id: str,
        function_name: str,
        function_version: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        log_group_name: str,
        log_stream_name: str,
        deadline_ms: int,
        identity: CognitoIdentity | None = None,
        client_context: ClientContext | None = None,
        model: Any = None,
    ) -> None:
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        # awslambdaric reads this from the environment, so on Lambda it is a string.
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.log_group_name = log_group_name
        self.log_stream_name = log_stream_name
        self.identity = identity
        self.client_context = client_context
        self.model = model
        self.features: dict[str, Any] = {}
        """Results of the ``[[features]]`` lookups, by name (runtime/features.py)."""
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, message: str) -> None:
        """As awslambdaric's ``context.log``: write to the function's log, unbuffered."""
        sys.stdout.write(message)
        sys.stdout.flush()

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, "
            f"function_name={self.function_name!r}, function_version={self.function_version!r})"
        )
