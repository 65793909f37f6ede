"""The AWS Lambda API (``/2015-03-31``, ``/2019-09-25``), as boto3 calls it.

``functions`` is Invoke, GetFunction and ListFunctions (and the service-error shape),
``aliases`` aliases and versions, ``async_config`` the event invoke config of async calls.
``endpoints()`` is this protocol's part of the gateway's route table (``gateway/policy.py``).
"""

from __future__ import annotations

from coldbrew.gateway.lambda_api import aliases, async_config, functions
from coldbrew.gateway.policy import Endpoint, anyone, function


def endpoints() -> list[Endpoint]:
    base = "/2015-03-31/functions"
    return [
        Endpoint(base, functions.list_functions, "GET", anyone("read")),
        Endpoint(f"{base}/", functions.list_functions, "GET", anyone("read")),
        Endpoint(f"{base}/{{function}}", functions.get_function, "GET", function("read")),
        Endpoint(f"{base}/{{function}}/invocations", functions.invoke, "POST", function("invoke")),
        *async_config.endpoints(),
        *aliases.endpoints(),
    ]


__all__ = ["endpoints"]
