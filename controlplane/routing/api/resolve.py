"""`GET routes/resolve/?path=/users/42&method=GET&host=api.example.com&headers=X-Tenant:acme`: where the
data plane would send a request (config:read).

Matching and the upstream URL come from `configdoc` (routes.MatcherTable and forwarding), the code the
data plane runs for its proxy and `/-/routes`, over the current document; the route table is built once
per revision. The answer's `decided_by` says which matcher chose the endpoint (§12): `path`, `host`,
`wildcard_host`, `match_headers`, `method`, or `traffic_split` when a canary split (configdoc.splits)
chose the version for this request (its header matched, or `client_ip` / the sticky header or cookie
put it in a bucket); `traffic_split` in the answer says how. The admin's route-debug page asks
`resolve_request` too. The data plane's mount prefix is a node setting, not part of the document: paths
are resolved without it.
"""

from __future__ import annotations

import json
import re
import threading
from hashlib import sha256
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from configdoc import MatcherTable, UnsafePath, request_host
from configdoc.forwarding import RouteEntry, resolve, route_table
from controlplane.core.middleware import request_id_of
from controlplane.core.revisions import current_document_bytes, latest_revision

# An HTTP method is a token (RFC 9110 §9.1); the proxy compares it as sent.
METHOD = re.compile(r"^[A-Za-z]{1,20}$")
# `Name: value`: a token, a colon, then visible text (a header value has no control characters).
HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}:[\x20-\x7e\x80-\xff]*$")
MAX_HEADER = 2048
MAX_HEADERS = 32
HOST_TEXT = re.compile(r"^[\x21-\x7e]*$")


class ResolveQuery(serializers.Serializer):  # type: ignore[type-arg]
    # 2,048 characters: percent-encoded (up to 12 bytes each) the query stays well inside the 64 KiB
    # request line the server reads; a longer one was refused by uvicorn in plain text, not by this API.
    path = serializers.CharField(
        max_length=2048, trim_whitespace=False, help_text="the raw request path, e.g. /users/42"
    )
    method = serializers.RegexField(METHOD, required=False, default="GET", help_text="the request method, default GET")
    host = serializers.CharField(
        max_length=300,
        required=False,
        default="",
        trim_whitespace=False,
        help_text="the request's Host header (port and case ignored, as the proxy does); empty: none",
    )
    headers = serializers.CharField(
        required=False,
        default="",
        trim_whitespace=False,
        # All of them in 2,048 characters, like `path`: the query (path + host + headers, percent-encoded)
        # must fit the server's 64 KiB request line, or uvicorn refuses it in plain text before this API.
        max_length=MAX_HEADER,
        help_text="request headers for endpoints with match_headers, one `Name: value` per line (a header given "
        "twice matches nothing, as in the proxy)",
    )

    client_ip = serializers.IPAddressField(
        required=False,
        default=None,
        allow_null=True,
        help_text="the client's address, for a traffic_split with sticky: ip (as the node determines it, "
        "trusted proxies considered); header and cookie stickiness read `headers`",
    )

    def validate_host(self, value: str) -> str:
        if not HOST_TEXT.match(value):
            raise serializers.ValidationError("a Host header value: visible ASCII characters only")
        return value

    def validate_headers(self, value: str) -> list[str]:
        lines = header_lines(value)
        if len(lines) > MAX_HEADERS or any(not HEADER.fullmatch(line) for line in lines):
            raise serializers.ValidationError(
                f"one `Name: value` per line (a header name, a colon, a value), at most {MAX_HEADERS} lines"
            )
        return lines


def header_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def header_values(items: list[str]) -> dict[str, str | None]:
    """`Name: value` items as the matcher reads request headers: lower-case name → value, and None for
    a header given twice (which, as in the proxy, no match_headers entry accepts)."""
    found: dict[str, str | None] = {}
    for item in items:
        name, _, value = item.partition(":")
        key = name.strip().lower()
        found[key] = None if key in found else value.strip()
    return found


class _TableCache:
    """The route table of the latest revision, rebuilt when the revision changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, str] | None = None
        self._table: MatcherTable[RouteEntry] = MatcherTable(())

    def get(self) -> tuple[int | None, MatcherTable[RouteEntry]]:
        revision = latest_revision()
        if revision is None:
            return None, MatcherTable(())
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
            400: "`validation_error` (a bad `path`, `method`, `host` or `headers`), or `bad_request` with the "
            "`path`: one the proxy refuses (a `.`/`..` segment, no leading `/`).",
            404: "`no_route` with the `path`: no endpoint serves it (for that host and those headers).",
        }
    }

    @extend_schema(
        parameters=[ResolveQuery],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        query = ResolveQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        code, body = resolve_request(
            path=data["path"],
            method=data["method"],
            host=data["host"],
            headers=data["headers"],
            client_ip=data.get("client_ip") or None,
        )
        if code != status.HTTP_200_OK:
            body["request_id"] = request_id_of(request)
        return Response(body, status=code)


def resolve_request(
    *, path: str, method: str = "GET", host: str = "", headers: list[str] | None = None, client_ip: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The API's answer for a request (status, body): the route-debug page shows the same."""
    method = method.upper()
    number, table = TABLES.get()
    try:
        found = resolve(
            table, path, host=host, method=method, headers=header_values(headers or []), client_ip=client_ip
        )
    except UnsafePath as exc:
        return status.HTTP_400_BAD_REQUEST, {"error": "bad_request", "message": str(exc), "path": path}
    if found is None:
        message = "no endpoint serves this path" + (" for this host and these headers" if not table.plain else "")
        return status.HTTP_404_NOT_FOUND, {"error": "no_route", "message": message, "path": path}
    entry = found.endpoint
    return status.HTTP_200_OK, {
        "path": path,
        "method": method,
        "host": request_host(host),
        "revision": number,
        "endpoint": {
            "key": entry.key,
            "route": found.route_key,
            "strip_path": entry.strip_path,
            "enabled": entry.enabled,
            "methods": list(entry.methods),
            "hosts": list(entry.hosts),
            "match_headers": {name: list(values) for name, values in entry.match_headers.items()},
        },
        "decided_by": found.decided_by,
        "method_allowed": found.method_allowed and method in entry.methods,
        "allow": list(found.allow),
        "forwarded_path": found.rest,
        "targets": [{"url": url, "upstream_url": upstream} for url, upstream in found.upstream_urls],
        # §12's canary, on the `/{name}` key of a splitting default version: how it decides this request.
        "traffic_split": dict(found.traffic_split) if found.traffic_split is not None else None,
    }
