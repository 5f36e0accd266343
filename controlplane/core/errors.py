"""Domain errors raised by services and mapped to HTTP answers in one place (core.api.errors).

GatewayError                      (status, code)
├── ConfigValidationError         400 validation_error  carries configdoc Problems
├── ForbiddenError                403 permission_denied e.g. granting a role you do not hold
├── NotFoundError                 404 not_found         the object went away (a concurrent write deleted it)
├── ConflictError                 409 conflict          e.g. a key that already exists, a policy in use
└── PreconditionFailed            412 precondition_failed
"""

from __future__ import annotations

from collections.abc import Iterable

from configdoc import Problem


class GatewayError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigValidationError(GatewayError):
    status = 400
    code = "validation_error"

    def __init__(self, problems: Iterable[Problem], message: str = "the configuration is not valid") -> None:
        super().__init__(message)
        self.problems = list(problems)

    def fields(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for problem in self.problems:
            out.setdefault(problem.path or "non_field_errors", []).append(problem.message)
        return out

    def __str__(self) -> str:
        return "; ".join(f"{p.path or '(object)'}: {p.message}" for p in self.problems) or self.message


class ConflictError(GatewayError):
    status = 409
    code = "conflict"


class NotFoundError(GatewayError):
    """The object a write addressed is gone: the view found it, then a concurrent write deleted (or
    renamed) it before this one got its row lock."""

    status = 404
    code = "not_found"


class PreconditionFailed(GatewayError):
    status = 412
    code = "precondition_failed"


class ForbiddenError(GatewayError):
    status = 403
    code = "permission_denied"
