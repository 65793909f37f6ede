"""Core errors. They carry a stable machine-readable ``code`` and know nothing of HTTP;
``gateway/errors.py`` maps each code to a status.

    ColdbrewError
    ├── ValidationError          VALIDATION_ERROR   bad JSON, schema violation, bad config
    ├── NotFound                 NOT_FOUND          no such function, version or alias
    ├── Conflict                 CONFLICT           e.g. deleting an alias another one needs
    ├── PayloadTooLarge          PAYLOAD_TOO_LARGE  body above the configured limit
    ├── Throttled                THROTTLED          no capacity before the queue deadline
    ├── DeployError              DEPLOY_ERROR       bundle refused: model/handler/validation
    ├── FunctionError            FUNCTION_ERROR     the handler raised
    ├── InvocationTimeout        TIMEOUT            handler ran past timeout_s
    ├── OutOfMemory              OUT_OF_MEMORY      instance exceeded memory_mb
    └── InstanceCrashed          INSTANCE_CRASHED   instance process died
"""

from __future__ import annotations

from typing import Any


class ColdbrewError(Exception):
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class ValidationError(ColdbrewError):
    code = "VALIDATION_ERROR"


class NotFound(ColdbrewError):
    code = "NOT_FOUND"


class Conflict(ColdbrewError):
    code = "CONFLICT"


class PayloadTooLarge(ColdbrewError):
    code = "PAYLOAD_TOO_LARGE"


class Throttled(ColdbrewError):
    code = "THROTTLED"

    def __init__(self, message: str, retry_after_s: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class DeployError(ColdbrewError):
    code = "DEPLOY_ERROR"


class FunctionError(ColdbrewError):
    code = "FUNCTION_ERROR"


class InvocationTimeout(ColdbrewError):
    code = "TIMEOUT"


class OutOfMemory(ColdbrewError):
    code = "OUT_OF_MEMORY"


class InstanceCrashed(ColdbrewError):
    code = "INSTANCE_CRASHED"
