"""Gateway-made errors (ARCHITECTURE §5), each carrying its status and `error` code.

    GatewayError
    ├── BadRequest                  400  bad_request        (connection closed)
    ├── RequestTimeout              408  request_timeout    (connection closed)
    ├── UriTooLong                  414  uri_too_long
    ├── HeadersTooLarge             431  headers_too_large
    ├── NoRoute                     404  no_route
    ├── MethodNotAllowed            405  method_not_allowed (+ Allow)
    ├── CorsForbidden               403  cors_forbidden     (the cors plugin: origin, method or header not allowed)
    ├── IpForbidden                 403  ip_forbidden       (the ip_restriction plugin)
    ├── BodyTooLarge                413  body_too_large
    ├── RateLimited                 429  rate_limited       (+ Retry-After; the rate_limit plugin)
    ├── UpgradeForbidden            403  upgrade_forbidden  (a WebSocket upgrade on an endpoint with `websocket: false`)
    ├── UpgradeNotSupported         501  upgrade_not_supported (an upgrade to anything but WebSocket)
    ├── LoopDetected                508  loop_detected
    ├── ClientGone                  499  client_closed_request (logged only; nobody is left to answer)
    ├── Unavailable                 503
    │   ├── EndpointDisabled             endpoint_disabled
    │   ├── Overloaded                   overloaded
    │   ├── CircuitOpen                  circuit_open       (+ Retry-After, X-Circuit-Breaker)
    │   ├── NoHealthyTarget              no_healthy_target  (+ Retry-After)
    │   ├── AuthUnavailable              auth_unavailable
    │   ├── RateLimitUnavailable         rate_limit_unavailable (+ Retry-After; redis down, not fault_tolerant)
    │   └── NoConfig                     no_config
    └── UpstreamError                    (a try failed; its class is what the retry rules read)
        ├── UpstreamUnavailable     502  upstream_unavailable
        │   ├── UpstreamConnectError          refused, or the TLS handshake failed: nothing was sent
        │   └── UpstreamReset                 the connection closed before an answer: never retried
        ├── UpstreamProtocolError   502  upstream_protocol_error
        ├── UpstreamTimeout         504  upstream_timeout   (no response head in time: `timeout`)
        │   └── UpstreamConnectTimeout        connecting timed out: nothing was sent
        └── UpstreamAborted              upstream_aborted   (mid-body: the client connection is dropped)

Every transport raises these classes (transport*.py), so the retry rules hold whichever is in use:
`retries.on: [connect_error]` retries UpstreamConnectError and UpstreamConnectTimeout (any method,
any body), `timeout` retries UpstreamTimeout besides the connect timeout (policies.RetryPolicy).

`error_answer` is the one place an error becomes a response: JSON
`{"error", "message", "request_id", "endpoint"}`, and `"trace_id"` when the request has a trace
(tracing.py: always with tracing on; off, when the client sent a valid `traceparent`).

An upstream failure's `message` goes to the client, so it is one of the fixed sentences below and never
names a target, an address or an OS/TLS error (those tell a caller how the inside is wired); what went
wrong exactly goes in `detail`, which the access log line with the same request id carries.
"""

from __future__ import annotations

import json

from .types import Headers


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    close_connection = False

    def __init__(self, message: str = "", *, headers: Headers | None = None, detail: str = "") -> None:
        super().__init__(message or self.code.replace("_", " "))
        self.message = message or self.code.replace("_", " ")
        self.headers: Headers = list(headers or [])
        self.detail = detail  # for the log only: the client sees `message`


class BadRequest(GatewayError):
    status, code, close_connection = 400, "bad_request", True


class RequestTimeout(GatewayError):
    status, code, close_connection = 408, "request_timeout", True


class UriTooLong(GatewayError):
    status, code = 414, "uri_too_long"


class HeadersTooLarge(GatewayError):
    status, code = 431, "headers_too_large"


class NoRoute(GatewayError):
    status, code = 404, "no_route"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"


class CorsForbidden(GatewayError):
    status, code = 403, "cors_forbidden"


class IpForbidden(GatewayError):
    """The client's address is not allowed here (plugins/ip_restriction.py)."""

    status, code = 403, "ip_forbidden"


class Unauthorized(GatewayError):
    """No credential at all on an endpoint that needs one, and no `anonymous` consumer
    (plugins/authentication.py); carries `WWW-Authenticate` with a challenge per scheme the endpoint takes."""

    status, code = 401, "unauthorized"


class InvalidCredentials(GatewayError):
    """A credential was presented and is wrong: unknown key, bad password, a token that fails a check."""

    status, code = 401, "invalid_credentials"


class Forbidden(GatewayError):
    """The caller is known and may not call this endpoint (`acl`)."""

    status, code = 403, "forbidden"


class BodyTooLarge(GatewayError):
    status, code, close_connection = 413, "body_too_large", True


class RateLimited(GatewayError):
    """The caller is over one of the endpoint's rate limits (plugins/rate_limit.py); carries `Retry-After`:
    the seconds until the window that refused it ends."""

    status, code = 429, "rate_limited"


class UpgradeForbidden(GatewayError):
    """A WebSocket upgrade on an endpoint that takes none (`websocket: false`)."""

    status, code = 403, "upgrade_forbidden"


class UpgradeNotSupported(GatewayError):
    status, code = 501, "upgrade_not_supported"


class LoopDetected(GatewayError):
    status, code = 508, "loop_detected"


class ClientGone(GatewayError):
    status, code = 499, "client_closed_request"


class Unavailable(GatewayError):
    status = 503


class EndpointDisabled(Unavailable):
    code = "endpoint_disabled"


class Overloaded(Unavailable):
    code = "overloaded"


class CircuitOpen(Unavailable):
    code = "circuit_open"


class NoHealthyTarget(Unavailable):
    code = "no_healthy_target"


class AuthUnavailable(Unavailable):
    """The service that decides who the caller is could not answer (`forward_auth` unreachable or slow,
    a `jwks_url` provider never reached): refused rather than let through."""

    code = "auth_unavailable"


class RateLimitUnavailable(Unavailable):
    """`policy: redis` without `fault_tolerant`: the shared counters could not be reached in time, and the
    endpoint asked to be refused rather than counted by each node alone."""

    code = "rate_limit_unavailable"


class NoConfig(Unavailable):
    code = "no_config"


# What a client is told about an upstream failure (the `message` of an UpstreamError).
REFUSED = "the upstream refused the connection"
CLOSED_BEFORE_ANSWERING = "the upstream closed the connection before answering"
TLS_FAILED = "the TLS handshake with the upstream failed"
MALFORMED = "the upstream answered with a malformed response"
NO_HEAD_IN_TIME = "the upstream sent no response head in time"
CONNECT_TIMED_OUT = "connecting to the upstream timed out"
STOPPED_READING = "the upstream stopped reading the request body"
CANNOT_SEND = "the request cannot be sent to the upstream as is"


class UpstreamError(GatewayError):
    status = 502


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamConnectError(UpstreamUnavailable):
    """No connection: refused, unreachable, or the TLS handshake failed. Nothing reached the upstream."""


class UpstreamReset(UpstreamUnavailable):
    """The connection closed before the answer's head: the request may have been acted on."""


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


class UpstreamTimeout(UpstreamError):
    status, code = 504, "upstream_timeout"


class UpstreamConnectTimeout(UpstreamTimeout):
    """Connecting took too long. Nothing reached the upstream."""


class UpstreamAborted(UpstreamError):
    code = "upstream_aborted"


def error_answer(
    error: GatewayError, request_id: str, endpoint: str | None, trace_id: str | None = None
) -> tuple[int, Headers, bytes]:
    """Status, headers and JSON body for a gateway-made error: the content headers and the error's own
    (`Allow`, `Retry-After`, `Connection: close`), not the gateway's response headers (`X-Request-ID`,
    `X-Endpoint-ID`, ...), which the proxy adds to every answer in one place (ProxyApp.answer_headers).
    `trace_id` (tracing.py: the request's trace when tracing is on, else a valid incoming traceparent's)
    adds a `trace_id` field; without one the body has none."""
    fields: dict[str, str | None] = {
        "error": error.code,
        "message": error.message,
        "request_id": request_id,
        "endpoint": endpoint,
    }
    if trace_id is not None:
        fields["trace_id"] = trace_id
    body = json.dumps(fields, separators=(",", ":")).encode()
    headers: Headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += error.headers
    if error.close_connection:
        headers.append((b"connection", b"close"))
    return error.status, headers, body


def error_response(error: GatewayError, request_id: str, endpoint: str | None) -> tuple[int, Headers, bytes]:
    """`error_answer` with `X-Request-ID` (and `X-Endpoint-ID`): for an answer made before any app runs
    (the server's own 400 and 408)."""
    status, headers, body = error_answer(error, request_id, endpoint)
    headers.append((b"x-request-id", request_id.encode()))
    if endpoint:
        headers.append((b"x-endpoint-id", endpoint.encode()))
    return status, headers, body
