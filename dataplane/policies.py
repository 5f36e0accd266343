"""An endpoint's policies, typed (STYLE 15b): the valid config's `retries`, `outlier`, `tls`,
`health_check` and breaker policy compiled once per snapshot into frozen, slotted dataclasses, so the
request path reads attributes, never a `dict` by string key. Built from the effective (validated,
defaults filled in) config; `compile_*` take those mappings. Equal policies compare equal, which is
how the runtime tells a policy unchanged across a reload; the snapshot interns them (one object per
distinct policy), so 10,000 endpoints at the defaults share one of each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UpstreamConnectError, UpstreamConnectTimeout, UpstreamError, UpstreamTimeout


def status_set(patterns: list[Any] | tuple[Any, ...]) -> frozenset[int]:
    """A list of statuses and classes like "5xx" (`failure_statuses`, `retries.on`) as the set of every
    status it covers (a class is its 100 codes), so the per-request question is one C-level set
    lookup. Entries that are neither (`connect_error`) are skipped."""
    codes: set[int] = set()
    for pattern in patterns:
        if isinstance(pattern, int):
            codes.add(pattern)
        elif str(pattern).endswith("xx") and str(pattern)[0].isdigit():
            first = int(str(pattern)[0]) * 100
            codes.update(range(first, first + 100))
    return frozenset(codes)


# The failures of a try that never reached the upstream: `connect_error` retries them for any method
# and any body (nothing was sent).
NOTHING_SENT: tuple[type[UpstreamError], ...] = (UpstreamConnectError, UpstreamConnectTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    # The failures a retry is allowed after, as classes of the errors tree (errors.py): from `on`'s
    # `connect_error` (NOTHING_SENT) and `timeout` (UpstreamTimeout, the connect timeout excepted).
    on_errors: tuple[type[UpstreamError], ...]
    # The statuses `on` covers (429, every code of "5xx"): an answer with one of them may be retried.
    statuses: frozenset[int]
    per_try_timeout: float | None
    retry_non_idempotent: bool
    # A condition besides `connect_error` (a timeout, a status): a try that reached the upstream may be
    # retried, so a body is worth keeping for a replay.
    after_sending: bool

    @property
    def on_timeout(self) -> bool:
        return UpstreamTimeout in self.on_errors


def compile_retries(raw: Mapping[str, Any]) -> RetryPolicy:
    on = list(raw["on"])
    errors: list[type[UpstreamError]] = []
    if "connect_error" in on:
        errors += NOTHING_SENT
    if "timeout" in on:
        errors.append(UpstreamTimeout)
    per_try = raw.get("per_try_timeout")
    return RetryPolicy(
        attempts=int(raw["attempts"]),
        on_errors=tuple(errors),
        statuses=status_set(on),
        per_try_timeout=float(per_try) if per_try else None,
        retry_non_idempotent=bool(raw["retry_non_idempotent"]),
        after_sending=any(condition != "connect_error" for condition in on),
    )


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int
    base_ejection_seconds: float
    max_ejection_percent: int


def compile_outlier(raw: Mapping[str, Any]) -> OutlierPolicy:
    return OutlierPolicy(
        consecutive_failures=int(raw["consecutive_failures"]),
        base_ejection_seconds=float(raw["base_ejection_seconds"]),
        max_ejection_percent=int(raw["max_ejection_percent"]),
    )


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    verify: bool
    ca_file: str | None
    server_name: str | None


def compile_tls(raw: Mapping[str, Any]) -> TlsPolicy:
    return TlsPolicy(verify=bool(raw["verify"]), ca_file=raw.get("ca_file"), server_name=raw.get("server_name"))


@dataclass(frozen=True, slots=True)
class HealthCheckPolicy:
    """The data plane acts only on `panic` (the control plane probes); the rest is kept for the report."""

    enabled: bool
    path: str | None
    interval: float
    timeout: float
    unhealthy_threshold: int
    healthy_threshold: int
    expected_statuses: frozenset[int]
    panic: bool


def compile_health_check(raw: Mapping[str, Any]) -> HealthCheckPolicy:
    return HealthCheckPolicy(
        enabled=bool(raw["enabled"]),
        path=raw.get("path"),
        interval=float(raw["interval"]),
        timeout=float(raw["timeout"]),
        unhealthy_threshold=int(raw["unhealthy_threshold"]),
        healthy_threshold=int(raw["healthy_threshold"]),
        expected_statuses=status_set(list(raw["expected_statuses"])),
        panic=bool(raw["panic"]),
    )


@dataclass(frozen=True, slots=True)
class FallbackResponse:
    status: int
    content_type: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class CacheLimits:
    max_entries: int
    max_bytes: int
    max_age: float


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    name: str
    failure_threshold: int
    failure_rate_threshold: float | None
    window_seconds: float
    minimum_calls: int
    reset_timeout: float
    half_open_max_calls: int
    success_threshold: int
    failure_statuses: frozenset[int]
    fallback_strategy: str  # error_response | default_response | cached_response
    fallback: FallbackResponse
    cache: CacheLimits


def compile_cache_limits(raw: Mapping[str, Any]) -> CacheLimits:
    return CacheLimits(
        max_entries=int(raw["max_entries"]), max_bytes=int(raw["max_bytes"]), max_age=float(raw["max_age"])
    )


def compile_breaker(raw: Mapping[str, Any]) -> BreakerPolicy:
    fallback = raw["fallback"]
    rate = raw.get("failure_rate_threshold")
    return BreakerPolicy(
        name=str(raw.get("name", "")),
        failure_threshold=int(raw["failure_threshold"]),
        failure_rate_threshold=float(rate) if rate is not None else None,
        window_seconds=float(raw["window_seconds"]),
        minimum_calls=int(raw["minimum_calls"]),
        reset_timeout=float(raw["reset_timeout"]),
        half_open_max_calls=int(raw["half_open_max_calls"]),
        success_threshold=int(raw["success_threshold"]),
        failure_statuses=status_set(list(raw["failure_statuses"])),
        fallback_strategy=str(raw["fallback_strategy"]),
        fallback=FallbackResponse(
            status=int(fallback["status"]),
            content_type=str(fallback["content_type"]).encode(),
            body=str(fallback["body"]).encode(),
        ),
        cache=compile_cache_limits(raw["cache"]),
    )
