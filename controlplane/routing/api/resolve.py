"""`GET routes/resolve/?path=/users/42&method=GET`: where the data plane would send a path (config:read).

Matching and the upstream URL come from `configdoc` (routes.RouteTable and forwarding), the code the
data plane runs, over the current document; the route table is built once per revision. The data
plane's mount prefix is a node setting, not part of the document: paths are resolved without it.
"""

from __future__ import annotations

import json
import re
import threading
from hashlib import sha256

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from configdoc import RouteTable, UnsafePath
from configdoc.forwarding import RouteEntry, resolve, route_table
from controlplane.core.middleware import request_id_of
from controlplane.core.revisions import current_document_bytes, latest_revision

# An HTTP method is a token (RFC 9110 §9.1); the proxy compares it as sent.
METHOD = re.compile(r"^[A-Za-z]{1,20}$")


class ResolveQuery(serializers.Serializer):  # type: ignore[type-arg]
    # 2,048 characters: percent-encoded (up to 12 bytes each) the query stays well inside the 64 KiB
    # request line the server reads; a longer one was refused by uvicorn in plain text, not by this API.
    path = serializers.CharField(
        max_length=2048, trim_whitespace=False, help_text="the raw request path, e.g. /users/42"
    )
    method = serializers.RegexField(METHOD, required=False, default="GET", help_text="the request method, default GET")


class _TableCache:
    """The route table of the latest revision, rebuilt when the revision changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, str] | None = None
        self._table: RouteTable[RouteEntry] = RouteTable({})

    def get(self) -> tuple[int | None, RouteTable[RouteEntry]]:
        revision = latest_revision()
        if revision is None:
            return None, RouteTable({})
        key = (revision.number, revision.config_sha256)
        with self._lock:
            if key == self._key:
                return revision.number, self._table
        body = current_document_bytes()
        table = route_table(json.loads(body))
        # A write between the two reads gives a newer document than `revision`: use it, cache it not.
        if sha256(body).hexdigest() == revision.config_sha256:
            with self._lock:
                self._key, self._table = key, table
        return revision.number, table


TABLES = _TableCache()


class RouteResolveApi(APIView):
    """Which endpoint and upstream URL(s) a request path goes to, as the data plane would route it."""

    read_permission = "config:read"
    action_errors = {
        "get": {
            400: "`validation_error` (a bad `path` or `method`), or `bad_request` with the `path`: one the proxy "
            "refuses (a `.`/`..` segment, no leading `/`).",
            404: "`no_route` with the `path`: no endpoint serves it.",
        }
    }

    @extend_schema(
        parameters=[ResolveQuery],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        query = ResolveQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        path: str = query.validated_data["path"]
        method: str = query.validated_data["method"].upper()
        number, table = TABLES.get()
        try:
            found = resolve(table, path)
        except UnsafePath as exc:
            return self._error(request, status.HTTP_400_BAD_REQUEST, "bad_request", str(exc), path)
        if found is None:
            return self._error(request, status.HTTP_404_NOT_FOUND, "no_route", "no endpoint serves this path", path)
        entry = found.endpoint
        return Response(
            {
                "path": path,
                "method": method,
                "revision": number,
                "endpoint": {
                    "key": entry.key,
                    "route": found.route_key,
                    "strip_path": entry.strip_path,
                    "enabled": entry.enabled,
                    "methods": list(entry.methods),
                },
                "method_allowed": method in entry.methods,
                "forwarded_path": found.rest,
                "targets": [{"url": url, "upstream_url": upstream} for url, upstream in found.upstream_urls],
            }
        )

    @staticmethod
    def _error(request: Request, status_code: int, code: str, message: str, path: str) -> Response:
        body = {"error": code, "message": message, "path": path, "request_id": request_id_of(request)}
        return Response(body, status=status_code)
