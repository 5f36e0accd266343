"""The document's global plugins over HTTP: `plugins/` (GET: config:read; PUT, PATCH: config:write).

The body is the `plugins` mapping itself (name -> config), as in the document's top level (§11).
GET answers each plugin with every default filled in (so it can be PUT back unchanged) and an ETag;
PUT replaces the mapping, PATCH merges by plugin name (a name given replaces that plugin's config
wholly; `null` removes it). A change is one revision and one `plugins.update` audit event.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from configdoc.plugins import effective_plugin_config
from controlplane.core.api.schema_fields import plugins_serializer_class
from controlplane.core.api.views import service_context
from controlplane.core.revisions import object_etag

from ..services import plugins_read, plugins_update


def _shown(plugins: dict[str, Any]) -> dict[str, Any]:
    return {name: effective_plugin_config(name, config) for name, config in sorted(plugins.items())}


class PluginsApi(APIView):
    """The document's global plugins: every endpoint runs them unless it sets the same name."""

    # The OpenAPI description of the body and the answer; the body itself goes to configdoc as sent.
    serializer_class = plugins_serializer_class()

    def _answer(self, plugins: dict[str, Any], text: str) -> Response:
        return Response(_shown(plugins), headers={"ETag": object_etag(text)})

    @extend_schema(responses={200: plugins_serializer_class()})
    def get(self, request: Request) -> Response:
        plugins, text = plugins_read()
        return self._answer(plugins, text)

    def _write(self, request: Request, *, partial: bool) -> Response:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        header = request.headers.get("If-Match")
        context: dict[str, Any] = {**service_context(request), **({"if_match": header} if header else {})}
        plugins_update(data=request.data, partial=partial, **context)
        plugins, text = plugins_read()
        return self._answer(plugins, text)

    @extend_schema(request=plugins_serializer_class(), responses={200: plugins_serializer_class()})
    def put(self, request: Request) -> Response:
        return self._write(request, partial=False)

    @extend_schema(
        request=plugins_serializer_class(removable=True)(partial=True),
        responses={200: plugins_serializer_class()},
        description="Merge by plugin name: a name given replaces that plugin's config wholly; null removes it.",
    )
    def patch(self, request: Request) -> Response:
        return self._write(request, partial=True)
