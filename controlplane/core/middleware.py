"""X-Request-ID: kept from the client when well-formed, else generated; echoed on every response.
URL keys with control characters: answered 404 before any view looks them up."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(request: HttpRequest) -> str:
    return getattr(request, "request_id", "")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request.request_id = incoming if _WELL_FORMED.match(incoming) else uuid.uuid4().hex  # type: ignore[attr-defined]
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request.request_id  # type: ignore[attr-defined]
        return response


# No key of any object (endpoint key, node id, username, role or policy name) holds a control
# character, and PostgreSQL refuses a NUL in a query parameter outright (a DataError, so a 500).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UrlKeyMiddleware:
    """An API URL whose captured key (`breakers/{key}/`, `dataplanes/{node_id}/`, ...) contains a
    control character (`%00`) names nothing: 404 `not_found` in the API's envelope, for every route at
    once, before a view sends the key to the database."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Any, view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        from rest_framework.views import APIView

        view_class = getattr(view_func, "cls", None)
        if not (isinstance(view_class, type) and issubclass(view_class, APIView)):
            return None
        for name, value in view_kwargs.items():
            if isinstance(value, str) and _CONTROL.search(value):
                body = {
                    "error": "not_found",
                    "message": f"not found: the {name} in the URL contains a control character",
                    "request_id": request_id_of(request),
                }
                return JsonResponse(body, status=404, json_dumps_params={"separators": (",", ":")})
        return None
