"""Core errors. Each carries a stable machine-readable ``code`` and declares its ``status``,
the HTTP status it has on every protocol (as starlette's ``HTTPException`` does): that is the
one place a code gets its status. ``gateway/errors.py`` renders them; core code never looks at
``status``.

    ColdbrewError                                   500
    ├── ValidationError          VALIDATION_ERROR   400  bad JSON, schema violation, bad config
    ├── NotFound                 NOT_FOUND          404  no such function, version or alias
    ├── Conflict                 CONFLICT           409  e.g. deleting an alias another one needs
    │   └── RouteReserved        ROUTE_RESERVED     409  a route under coldbrew's paths (/v1...)
    ├── PayloadTooLarge          PAYLOAD_TOO_LARGE  413  body above the configured limit
    │   └── BundleTooLarge       BUNDLE_TOO_LARGE   413  bundle unpacks past its limits
    ├── Throttled                THROTTLED          429  no capacity before the queue deadline
    ├── DeployError              DEPLOY_ERROR       422  bundle refused: model/handler/validation
    ├── FunctionError            FUNCTION_ERROR     500  the handler raised
    ├── InvocationTimeout        TIMEOUT            504  handler ran past timeout_s
    ├── OutOfMemory              OUT_OF_MEMORY      502  instance exceeded memory_mb
    ├── InstanceCrashed          INSTANCE_CRASHED   502  instance process died
    └── InitError                INIT_ERROR         502  instances keep failing to start

Subclasses elsewhere (``security/errors.py``, ``runtime/loaders.py``...) declare theirs the same
way. An error often reaches the gateway as a bare code (an instance's answer, a queued event's
outcome): :func:`status_of` finds the status every class declared for it.
"""

from __future__ import annotations

from typing import Any

_STATUS_BY_CODE: dict[str, int] = {}


def declare(code: str, status: int) -> None:
    """Give ``code`` its status. Every :class:`ColdbrewError` subclass does so when defined; a
    code that exists only as a string (a gateway answer, an instance's) is declared with this.
    One code has one status: a second, different one is a programming error."""
    known = _STATUS_BY_CODE.setdefault(code, status)
    if known != status:
        raise TypeError(f"error code {code} has status {known}, not {status}")


def status_of(code: str) -> int:
    """The HTTP status of an error code (500 for a code nobody declared)."""
    return _STATUS_BY_CODE.get(code, 500)


class ColdbrewError(Exception):
    code = "INTERNAL_ERROR"
    status = 500

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declare(cls.code, cls.status)

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class ValidationError(ColdbrewError):
    code = "VALIDATION_ERROR"
    status = 400


class NotFound(ColdbrewError):
    code = "NOT_FOUND"
    status = 404


class Conflict(ColdbrewError):
    code = "CONFLICT"
    status = 409


class RouteReserved(Conflict):
    code = "ROUTE_RESERVED"


class PayloadTooLarge(ColdbrewError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class BundleTooLarge(PayloadTooLarge):
    code = "BUNDLE_TOO_LARGE"


class Throttled(ColdbrewError):
    code = "THROTTLED"
    status = 429

    def __init__(self, message: str, retry_after_s: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class DeployError(ColdbrewError):
    code = "DEPLOY_ERROR"
    status = 422


class FunctionError(ColdbrewError):
    code = "FUNCTION_ERROR"


class InvocationTimeout(ColdbrewError):
    code = "TIMEOUT"
    status = 504


class OutOfMemory(ColdbrewError):
    code = "OUT_OF_MEMORY"
    status = 502


class InstanceCrashed(ColdbrewError):
    code = "INSTANCE_CRASHED"
    status = 502


class InitError(ColdbrewError):
    """A version's instances fail to start (the handler does not import, the model does not
    load): the caller learns why at once instead of waiting for an instance that never comes.

    ``error_type`` and ``error_message`` are the user code's own exception (``RuntimeError``,
    ``boom``), never a stack trace; ``module`` is the handler module; ``retry_after_s`` is
    when the next start will be tried."""

    code = "INIT_ERROR"
    status = 502

    def __init__(
        self,
        message: str,
        error_type: str,
        error_message: str,
        module: str | None = None,
        retry_after_s: int = 1,
        kind: str = "import",
        **details: Any,
    ) -> None:
        super().__init__(
            message,
            errorType=error_type,
            errorMessage=error_message,
            retry_after_s=retry_after_s,
            **details,
        )
        self.error_type = error_type
        self.error_message = error_message
        self.module = module
        self.retry_after_s = retry_after_s
        self.kind = kind
        """What failed: ``import`` (the handler), ``load`` (the model), ``memory`` or ``crash``."""
