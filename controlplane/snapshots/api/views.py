"""The config document over HTTP: `config/export/` (config:read) and `config/import/` (config:write)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from configdoc import LATEST_FORMAT_VERSION, Problem, config_sha256, load_document
from configdoc.yamlio import MAX_DOCUMENT_BYTES
from controlplane.accounts.roles import CONFIG_WRITE, has_gateway_perm
from controlplane.consumers.redaction import public_document
from controlplane.core.api.params import flag_parameter, query_flag
from controlplane.core.api.views import service_context
from controlplane.core.errors import ConfigValidationError
from controlplane.core.middleware import request_id_of

from ..formats import FORMATS, render_document
from ..services import config_export, config_import

CONTENT_TYPES = {"yaml": "application/yaml; charset=utf-8", "json": "application/json"}


def validation_error_response(request: Request, problems: list[Problem], warnings: list[Problem]) -> Response:
    """The API's validation_error envelope, plus `problems` with the YAML line of each."""
    error = ConfigValidationError(problems)
    body: dict[str, Any] = {
        "error": error.code,
        "message": error.message,
        "fields": error.fields(),
        "problems": [p.as_dict() for p in problems],
        "warnings": [w.as_dict() for w in warnings],
        "request_id": request_id_of(request),
    }
    return Response(body, status=error.status)


class _DocumentFormatNegotiation(DefaultContentNegotiation):
    """`?format=` names the document's format here, not a DRF renderer: errors always answer JSON."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> Any:
        choices = list(renderers)
        renderer = next((r for r in choices if r.format == "json"), choices[0])
        return renderer, renderer.media_type


class ConfigExportApi(APIView):
    """GET the live document: canonical YAML (default) or canonical JSON (`?format=json`)."""

    content_negotiation_class = _DocumentFormatNegotiation

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=list(FORMATS), description="yaml (default) or json")],
        # Either way the body is the document, a mapping (docs/config-document.md).
        responses={(200, "application/yaml"): OpenApiTypes.OBJECT, (200, "application/json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> HttpResponse:
        fmt = request.query_params.get("format") or "yaml"
        if fmt not in FORMATS:
            raise ConfigValidationError([Problem("format", f"must be one of {', '.join(FORMATS)}, not {fmt!r}")])
        document = config_export()
        if not has_gateway_perm(request.user, CONFIG_WRITE):
            # Key and password hashes are credential material: only those who may write config (and so
            # import this export back) get them; others see consumers' keys by label (§8, §11).
            document = public_document(document)
        response = HttpResponse(render_document(document, fmt), content_type=CONTENT_TYPES[fmt])
        response["ETag"] = f'"{config_sha256(document)}"'
        return response


class ConfigImportApi(APIView):
    """POST a document (JSON or YAML body, v1 or seed format); `?dry_run=1` plans only, `?prune=1` deletes
    what the document does not name. Answers the plan: every object and field changed, and the revision."""

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT, "application/yaml": OpenApiTypes.OBJECT},
        parameters=[
            flag_parameter("dry_run", "plan only: change nothing"),
            flag_parameter("prune", "delete what the document does not name"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        # Read the raw body (not request.data): YAML and JSON alike, with lines for every problem,
        # under the document's own size cap rather than the form-data one.
        prune, dry_run = query_flag(request, "prune"), query_flag(request, "dry_run")
        stream = request.stream
        raw = stream.read(MAX_DOCUMENT_BYTES + 1) if stream is not None else b""
        result = load_document(
            raw, allow_link_local=settings.GATEWAY_ALLOW_LINK_LOCAL_TARGETS, max_format_version=LATEST_FORMAT_VERSION
        )
        if result.problems:
            return validation_error_response(request, result.problems, result.warnings)
        try:
            plan = config_import(
                document=result.document,
                prune=prune,
                dry_run=dry_run,
                summary="import config over the API",
                **service_context(request),
            )
        except ConfigValidationError as exc:
            return validation_error_response(request, exc.problems, result.warnings)
        return Response({**plan.as_dict(), "warnings": [w.as_dict() for w in result.warnings]})
