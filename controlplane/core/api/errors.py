"""The one error envelope of the API (ARCHITECTURE §8).

    {"error": "validation_error", "message": "...", "fields": {"targets[0].url": ["..."]}, "request_id": "..."}

Every error the API answers goes through `exception_handler`: DRF's own exceptions, Django's 404
and permission errors, and the services' GatewayError tree. What never reaches a DRF view (a path no
route matches, an exception no handler caught, Django's own refusals) is put in the same envelope by
`ApiErrorMiddleware`, for every path under /api/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.renderers import BrowsableAPIRenderer
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


def error_body(request: Any, code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
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
        return Response(error_body(request, exc.code, exc.message, fields), status=exc.status)

    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]

    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None) or str(exc.default_code)
    if isinstance(exc, exceptions.ValidationError):
        body = error_body(request, code, "the request is not valid", flatten_errors(exc.detail))
    elif isinstance(exc.detail, dict):
        # simplejwt's InvalidToken carries {"detail", "code", "messages"}.
        message = str(exc.detail.get("detail", exc.default_detail))
        body = error_body(request, code, message)
    else:
        body = error_body(request, code, str(exc.detail))
    set_rollback()
    return Response(body, status=exc.status_code or status.HTTP_400_BAD_REQUEST, headers=headers)


API_PREFIX = "/api/"
# Django's own answers under /api/ (no DRF view involved), by status: the code and a plain sentence.
_DJANGO_ERRORS = {
    400: ("bad_request", "the request could not be read"),
    403: ("permission_denied", "the request was refused"),
    404: ("not_found", "nothing answers at this path"),
    405: ("method_not_allowed", "this method is not allowed here"),
    413: ("body_too_large", "the request body is too large"),
    500: ("server_error", "the server failed to answer; the error was logged under this request id"),
}


class ApiErrorMiddleware:
    """Under /api/: every error in the envelope, and a query parameter given twice refused.

    Django answers some requests before (or without) a DRF view: a path no route matches (404, also
    with DEBUG's technical page), an exception nothing caught (500, the technical page or handler500),
    a refused host or an unreadable body (400). Those pages are HTML; an API client gets the envelope,
    with the same request id as the logged error. DRF's errors are the envelope already, but the schema
    and docs views render them as YAML or HTML: those become JSON too. The browsable API's error pages
    (for people, on local setups) are left alone, and so is everything outside /api/ (the admin, the
    dashboards).

    No query parameter of this API takes several values, and Django keeps only the last of
    `?limit=1&limit=5`, so a repeated one is refused (400 naming it) rather than half-read.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        repeated = sorted(name for name, values in request.GET.lists() if len(values) > 1)
        if repeated:
            fields = {name: ["give this parameter once"] for name in repeated}
            body = error_body(request, "validation_error", "the query is not valid", fields)
            return JsonResponse(body, status=400)
        response = self.get_response(request)
        if response.status_code < 400 or _is_json(response):
            return response
        status_code = response.status_code
        if isinstance(response, Response):
            renderer = getattr(response, "accepted_renderer", None)
            if isinstance(renderer, BrowsableAPIRenderer) or not isinstance(response.data, dict):
                return response
            # The envelope, rendered by a view's own renderer: the schema's YAML, the docs page's template.
            answer = JsonResponse(response.data, status=status_code)
        else:
            code, message = _DJANGO_ERRORS.get(status_code, ("error", str(response.reason_phrase).lower()))
            answer = JsonResponse(error_body(request, code, message), status=status_code)
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if header in response:
                answer[header] = response[header]
        return answer


def _is_json(response: HttpResponse) -> bool:
    return str(response.get("Content-Type", "")).startswith("application/json")
