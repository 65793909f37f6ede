"""Errors of the security layer. Like the core errors each declares its HTTP status
(``coldbrew.errors``), which ``gateway/errors.py`` renders.

    ColdbrewError                           (coldbrew.errors)
    ├── Unauthorized       UNAUTHORIZED        no credentials, or credentials that do not check out
    ├── Forbidden          FORBIDDEN           a valid caller whose role does not allow the action
    ├── DeadlineExceeded   DEADLINE_EXCEEDED   the request's own deadline passed
    └── Throttled          (coldbrew.errors)
        ├── RateLimited    RATE_LIMITED        a key's or function's token bucket is empty
        └── QuotaExceeded  QUOTA_EXCEEDED      a key's daily or monthly quota is used up

A function outside the caller's scope is reported as ``NotFound``, exactly like a missing one,
so that a scoped key learns nothing about functions it may not see.
"""

from __future__ import annotations

from coldbrew import errors


class Unauthorized(errors.ColdbrewError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(errors.ColdbrewError):
    code = "FORBIDDEN"
    status = 403


class DeadlineExceeded(errors.ColdbrewError):
    code = "DEADLINE_EXCEEDED"
    status = 504


class RateLimited(errors.Throttled):
    code = "RATE_LIMITED"


class QuotaExceeded(errors.Throttled):
    code = "QUOTA_EXCEEDED"
