"""The one error envelope of the API (ARCHITECTURE §8).

    {"error": "validation_error", "message": "...", "fields": {"targets[0].url": ["..."]}, "request_id": "..."}

Every error the API answers goes through `exception_handler`: DRF's own exceptions, Django's 404
and permission errors, and the services' GatewayError tree.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from controlplane.accounts.lockout import TooManyLoginAttempts, locked_out
from controlplane.core.errors import ConfigValidationError, GatewayError
from controlplane.core.middleware import request_id_of

_CODES = {
    # Before Throttled, its base class.
    TooManyLoginAttempts: "too_many_attempts",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.ParseError: "parse_error",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "validation_error",
}


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail → {"a.b[0].c": ["message", ...]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            key = str(key)
            if key.startswith("[") or not prefix:
                path = f"{prefix}{key}"
            else:
                path = f"{prefix}.{key}"
            for sub, messages in flatten_errors(value, path).items():
                out.setdefault(sub, []).extend(messages)
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            out.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                for sub, messages in flatten_errors(item, f"{prefix}[{index}]").items():
                    out.setdefault(sub, []).extend(messages)
    else:
        out.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return out


def _body(request: Any, code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    body["request_id"] = request_id_of(request) if request is not None else ""
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    if locked_out(request):
        # A password check on this request was refused or locked by the login lockout (accounts.lockout):
        # whatever the view made of it (401, 400), the client is told to wait.
        exc = TooManyLoginAttempts()
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, GatewayError):
        set_rollback()
        fields = exc.fields() if isinstance(exc, ConfigValidationError) else None
        return Response(_body(request, exc.code, exc.message, fields), status=exc.status)

    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]

    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None) or str(exc.default_code)
    if isinstance(exc, exceptions.ValidationError):
        body = _body(request, code, "the request is not valid", flatten_errors(exc.detail))
    elif isinstance(exc.detail, dict):
        # simplejwt's InvalidToken carries {"detail", "code", "messages"}.
        message = str(exc.detail.get("detail", exc.default_detail))
        body = _body(request, code, message)
    else:
        body = _body(request, code, str(exc.detail))
    set_rollback()
    return Response(body, status=exc.status_code or status.HTTP_400_BAD_REQUEST, headers=headers)
