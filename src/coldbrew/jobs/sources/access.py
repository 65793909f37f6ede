"""What a tenant's ``kind = "s3"`` source may reach when the gateway has auth on.

An S3 source lists, reads and (with ``batch_job``) writes with the gateway's own AWS
credentials, so a deployer scoped to one function could otherwise point it at any bucket the
platform can reach, or send the gateway's signed requests to any host (``endpoint_url``). As
folder sources are held to ``COLDBREW_FOLDER_SOURCE_ROOTS``, with auth on:

- the source's ``bucket`` (and its ``prefix``), and the bucket and prefix its ``batch_output``
  writes to, must be granted by ``COLDBREW_S3_SOURCE_BUCKETS``: comma-separated ``bucket`` (the
  whole bucket) or ``bucket/prefix`` (only keys starting with ``prefix``, as S3 prefixes match:
  end it with ``/`` to mean a folder);
- ``endpoint_url``, when set, must be the gateway's own S3 endpoint (``COLDBREW_S3_ENDPOINT_URL``,
  ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``) or one of ``COLDBREW_S3_SOURCE_ENDPOINTS``.

The variables are read when the source starts (as the folder roots are) and checked for form at
gateway start by settings.py, with the parsers of core/s3_grants.py. With auth off nothing is
checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from coldbrew import errors
from coldbrew.core.s3_grants import normalise_endpoint, parse_buckets, parse_endpoints
from coldbrew.runtime.config import S3SourceConfig

BUCKETS_VARIABLE = "COLDBREW_S3_SOURCE_BUCKETS"
ENDPOINTS_VARIABLE = "COLDBREW_S3_SOURCE_ENDPOINTS"
GATEWAY_ENDPOINT_VARIABLES = ("COLDBREW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where the gateway's own S3 requests go: a source naming it reaches nothing new."""


def check_s3_source(
    config: S3SourceConfig, auth_enabled: bool, environ: Mapping[str, str] | None = None
) -> None:
    """Raise ValidationError (said in ``coldbrew source ls``) if this gateway, with auth on,
    must not let ``config`` (an ``S3SourceConfig``) reach its bucket, output or endpoint."""
    if not auth_enabled:
        return  # loopback dev mode: the person deploying is the machine's owner
    env = os.environ if environ is None else environ
    _check_endpoint(config.endpoint_url, env)
    try:
        grants = parse_buckets(env.get(BUCKETS_VARIABLE, ""))
    except ValueError as exc:  # settings.py refuses this at start; a changed env says it here
        raise errors.ValidationError(f"{BUCKETS_VARIABLE}: {exc}") from None
    if not grants:
        raise errors.ValidationError(
            f"s3 sources need {BUCKETS_VARIABLE} (the buckets tenants may use, comma-separated "
            "bucket or bucket/prefix) when auth is on"
        )
    if not any(g.covers(config.bucket, config.prefix) for g in grants):
        raise errors.ValidationError(
            f"s3://{config.bucket}/{config.prefix} is not inside {BUCKETS_VARIABLE}"
        )
    output = config.batch_output_location()
    if output is not None:
        bucket, prefix = output
        if not any(g.covers(bucket, prefix) for g in grants):
            raise errors.ValidationError(
                f"batch_output s3://{bucket}/{prefix} is not inside {BUCKETS_VARIABLE}"
            )


def _check_endpoint(endpoint_url: str | None, env: Mapping[str, str]) -> None:
    if endpoint_url is None:
        return  # boto3's own: the gateway's configured endpoint or AWS
    wanted = normalise_endpoint(endpoint_url)
    own = {normalise_endpoint(env[v]) for v in GATEWAY_ENDPOINT_VARIABLES if env.get(v)}
    try:
        listed = parse_endpoints(env.get(ENDPOINTS_VARIABLE, ""))
    except ValueError as exc:
        raise errors.ValidationError(f"{ENDPOINTS_VARIABLE}: {exc}") from None
    if wanted not in own and wanted not in listed:
        raise errors.ValidationError(
            f"endpoint_url {endpoint_url} is neither the gateway's S3 endpoint "
            f"(COLDBREW_S3_ENDPOINT_URL) nor in {ENDPOINTS_VARIABLE}"
        )
