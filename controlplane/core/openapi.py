"""What the OpenAPI schema says beyond drf-spectacular's defaults: the error answers and the routes
answered before Django.

**Errors.** `GatewayAutoSchema` attaches to every operation the error statuses it really answers, each in
the one envelope (the `GatewayError` component, controlplane/core/api/errors.py): 400 everywhere (a bad
body or query; at least a query parameter given twice), 401 everywhere (a bad token is refused even
where none is needed), 403 where a role is checked, 404 where the path names an object, 412 on the
writes that take `If-Match`, 415 where a body is read, 429 where a throttle applies; and what a view
declares for one action in `action_errors` (409 for a conflict, 404 for a revision named in the query,
or its own wording of a status).
Optional query parameters are marked `allowEmptyValue`: an empty value is no value everywhere in this
API (django-filter's and DRF's reading).

**Routes answered before Django** (drf-spectacular postprocessing hook).

`config/asgi.py` sends three paths to async handlers so waiting holds no thread (ARCHITECTURE §4):
the data-plane sync (`dataplane/config`, `dataplane/status`, `controlplane/dataplanes/sync.py`) and the
rollout wait (`revisions/{number}/wait/`, `controlplane/dataplanes/rollout.py`). DRF never sees them,
so drf-spectacular cannot; this hook describes them, from the same facts as docs/sync-api.md and
docs/api.md, so a client generated from the schema can call them.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny

from controlplane.dataplanes.status import FIELDS, IDENTIFIER, MAX_ERROR_CHARS, OPTIONAL, RESULTS

API = "/api/v1"

_ERROR = {
    "type": "object",
    "description": "The API's one error envelope (docs/api.md). Some answers add keys of their own.",
    "required": ["error", "message", "request_id"],
    "properties": {
        "error": {"type": "string", "description": "A stable error code, e.g. `validation_error`, `not_found`."},
        "message": {"type": "string", "description": "A sentence for people."},
        "fields": {
            "type": "object",
            "description": "With `validation_error`: the messages for each bad field or query parameter.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "request_id": {"type": "string", "description": "The X-Request-ID of the request, as logged."},
    },
}
_ERROR_DESCRIPTIONS = {
    400: "`validation_error` naming each bad field or query parameter in `fields`, or `parse_error` "
    "(a body that is not JSON).",
    401: "`not_authenticated` or `authentication_failed`: no valid token.",
    403: "`permission_denied`: the role lacks the permission.",
    404: "`not_found`: no such object.",
    409: "`conflict`.",
    412: "`precondition_failed`: `If-Match` names an older version; nothing was written.",
    415: "`unsupported_media_type`: a body in a media type not listed here.",
    429: "`throttled`: too many attempts; `Retry-After` says when to try again.",
}


class GatewayAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error answers of each operation (the module docstring)."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        reads_input = "requestBody" in operation or any(p["in"] == "query" for p in operation.get("parameters", []))
        # Without a body or a query, only a query parameter given twice is a 400 (ApiErrorMiddleware).
        own = {} if reads_input else {400: "`validation_error`: a query parameter given twice."}
        own.update(self.own_errors())
        for status in sorted(set(self.error_statuses(operation)) | set(own)):
            responses.setdefault(str(status), _error(own.get(status, _ERROR_DESCRIPTIONS[status])))
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
        return operation

    def error_statuses(self, operation: dict[str, Any]) -> list[int]:
        """The statuses every operation of its kind answers."""
        from controlplane.core.api.views import DocumentObjectViewSet

        view, method = self.view, self.method
        statuses = [400, 401]
        if any(not isinstance(permission, AllowAny) for permission in view.get_permissions()):
            statuses.append(403)
        if "{" in self.path:
            statuses.append(404)
        if isinstance(view, DocumentObjectViewSet) and method in ("PUT", "PATCH", "DELETE"):
            statuses.append(412)
        if "requestBody" in operation:
            statuses.append(415)
        if view.get_throttles():
            statuses.append(429)
        return statuses

    def own_errors(self) -> dict[int, str]:
        """A view's `action_errors` maps its actions (viewsets) or methods (APIViews) to the statuses
        only they answer (a conflict, a revision that does not exist), or word their own way."""
        errors: dict[str, dict[int, str]] = getattr(self.view, "action_errors", {})
        return errors.get(getattr(self.view, "action", None) or self.method.lower(), {})


_ROLLOUT = {
    "type": "object",
    "required": ["revision", "share", "applied", "rejected", "live"],
    "properties": {
        "revision": {"type": "integer"},
        "share": {"type": "number"},
        "applied": {"type": "integer", "description": "Live nodes on this revision or a later one."},
        "rejected": {"type": "integer", "description": "Live nodes that refused it."},
        "live": {"type": "integer"},
        "done": {"type": "boolean"},
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, {"$ref": "#/components/schemas/GatewayError"})


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    # Like every optional query parameter of the API, an empty value is no value (parse_qs drops it).
    return {
        "in": "query",
        "name": name,
        "required": False,
        "allowEmptyValue": True,
        "description": description,
        "schema": schema,
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {"in": "header", "name": name, "required": False, "description": description, "schema": {"type": "string"}}


def _rollout_wait(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": "revisions_wait",
            "summary": "Wait until a share of the live data-plane nodes applied a revision",
            "description": (
                "Answered by an async handler before Django (it holds no thread); re-reads the nodes every "
                "200 ms. Role: config:read. JWT only (not the session cookie). See docs/api.md."
            ),
            "tags": ["revisions"],
            "security": security,
            "parameters": [
                {"in": "path", "name": "number", "required": True, "schema": {"type": "integer"}},
                _query(
                    "share",
                    "Share of the live nodes, in (0, 1]; default 1.",
                    {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1, "default": 1.0},
                ),
                _query(
                    "timeout",
                    "Seconds to wait, 1-60 (fractions allowed); default 30.",
                    {"type": "number", "minimum": 1, "maximum": 60, "default": 30},
                ),
            ],
            "responses": {
                "200": _json("The share was reached (at once if it already was).", _ROLLOUT),
                "400": _error("`validation_error`: a bad `share` or `timeout`, named in `fields`."),
                "401": _error("No valid token."),
                "403": _error("The role lacks config:read."),
                "404": _error("`not_found`: no such revision."),
                "409": _error(
                    "`rollout_failed` (a live node rejected it), `rollout_incomplete` (the timeout passed) or "
                    "`no_live_nodes`; the counts are included."
                ),
            },
        }
    }


def _dataplane_config() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "dataplane_config",
            "summary": "A data plane's snapshot, long-polled by ETag",
            "description": "Data-plane token (`Authorization: Bearer`). See docs/sync-api.md.",
            "tags": ["dataplane"],
            "security": [{"dataPlaneToken": []}],
            "parameters": [
                _header("If-None-Match", "The ETag the node runs."),
                _header("X-Gateway-Format", "The highest snapshot format the node reads (default 1)."),
                _query("wait", "With If-None-Match: seconds to wait for a change, 1-60.", {"type": "integer"}),
            ],
            "responses": {
                "200": _json(
                    "The snapshot (canonical JSON), with its ETag.",
                    {
                        "type": "object",
                        "required": ["format_version", "revision", "config_sha256", "state_seq", "config", "state"],
                        "properties": {
                            "format_version": {"type": "integer"},
                            "revision": {"type": "integer"},
                            "config_sha256": {"type": "string"},
                            "state_seq": {"type": "integer"},
                            "generated_at": {"type": "string", "format": "date-time"},
                            "config": {"type": "object", "description": "The config document."},
                            "state": {"type": "object", "description": "Target health and breaker overrides."},
                        },
                    },
                ),
                "304": {"description": "No change within `wait`."},
                "401": _error("`not_authenticated`: no valid data-plane token."),
                "409": _error("`format_unsupported`."),
                "503": _error("`unavailable`: the database cannot be read."),
            },
        }
    }


def _dataplane_status() -> dict[str, Any]:
    return {
        "post": {
            "operationId": "dataplane_status",
            "summary": "A data plane's status report (applied or rejected, breakers, counters)",
            "description": (
                "Data-plane token. Unknown fields are refused. At most 4 MiB; may be sent gzipped "
                "(Content-Encoding: gzip). See docs/sync-api.md."
            ),
            "tags": ["dataplane"],
            "security": [{"dataPlaneToken": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            # The fields and rules of controlplane/dataplanes/status.py, which checks them.
                            "required": [name for name in FIELDS if name not in OPTIONAL],
                            "properties": {
                                "node_id": {"type": "string", "pattern": IDENTIFIER.pattern},
                                "boot_id": {"type": "string", "pattern": IDENTIFIER.pattern},
                                "hostname": {"type": "string", "maxLength": 255},
                                "version": {"type": "string", "maxLength": 64},
                                "revision": {"type": "integer", "minimum": 0, "nullable": True},
                                "config_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "nullable": True},
                                "state_seq": {"type": "integer", "minimum": 0, "nullable": True},
                                "result": {"type": "string", "enum": list(RESULTS)},
                                "error": {"type": "string", "maxLength": MAX_ERROR_CHARS, "nullable": True},
                                "breakers": {"type": "object"},
                                "counters": {"type": "object"},
                            },
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "204": {"description": "Stored."},
                "400": _error("`validation_error`, with `fields` naming every bad field; nothing stored."),
                "401": _error("`not_authenticated`."),
                "413": _error("`body_too_large`: over 4 MiB sent, or over 32 MiB decompressed."),
                "415": _error("`unsupported_media_type`: a Content-Encoding other than gzip."),
            },
        }
    }


def add_asgi_routes(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: add the paths `config/asgi.py` answers itself."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["GatewayError"] = _ERROR
    schemes = components.setdefault("securitySchemes", {})
    schemes["dataPlaneToken"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A data-plane token (`manage.py issue_dataplane_token`), not a user's JWT.",
    }
    # The wait takes the JWT only, not the session cookie (docs/api.md).
    jwt_only: list[dict[str, list[str]]] = [{"jwtAuth": []}] if "jwtAuth" in schemes else []
    paths = result.setdefault("paths", {})
    paths[f"{API}/revisions/{{number}}/wait/"] = _rollout_wait(jwt_only)
    paths[f"{API}/dataplane/config"] = _dataplane_config()
    paths[f"{API}/dataplane/status"] = _dataplane_status()
    return result
