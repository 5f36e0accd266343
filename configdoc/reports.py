"""The shapes of a status report's `breakers` and `counters` (ARCHITECTURE §4) and histogram helpers.

Pure Python, shared by both planes: the data plane builds reports in these shapes
(dataplane/report.py), the control plane validates them (controlplane/dataplanes/status.py) and
aggregates them (controlplane/stats).

    counters: {"<endpoint key>": {
        "requests": {"2xx": int, "3xx": int, "4xx": int, "5xx": int},
        "errors": {"<gateway error code>": int},
        "retries": int, "breaker_trips": int,
        "duration": {"buckets": [int x 16], "sum": float seconds},
        "upstream_duration": {"buckets": [int x 16], "sum": float seconds}}}
    breakers: {"<endpoint key>": {
        "state": "closed"|"open"|"half_open", "forced": "open"|"closed"|null, "reset_generation": int,
        "transitions": [{"from": state, "to": state, "at": unix seconds}, ...]  (oldest first, at most 20)}}
    consumers: {"epoch": int >= 1, "endpoints": {"<endpoint key>": {
        "top": {"<consumer username>": {"2xx": int, "3xx": int, "4xx": int, "5xx": int,
                                        "rate_limited": int (optional)}},  (at most 100)
        "other": {"2xx": int, "3xx": int, "4xx": int, "5xx": int, "rate_limited": int (optional)}}}}

`consumers` (optional) is traffic by consumer since the node's previous report, not since boot: per
endpoint the top consumers by requests and the rest summed as `other` (a separate field, so no
username can be mistaken for it). Requests no authentication plugin named a consumer for are not in
it; the `anonymous` consumer is listed under its username. `epoch` grows with every report of a boot,
so the control plane adds a report's consumer counts once even when it arrives twice.
`rate_limited` is how many of the 4xx were the `rate_limit` plugin's 429 `rate_limited` (so at most
`4xx`); a node sends it only when it is not 0, and a report without it means 0 (nodes older than the
field).

    certificates: [{"name": "<file name without .pem>", "names": ["api.example.com", "*.example.com"],
        "not_after": unix seconds}, ...]  (the TLS listener's, §13; at most 1000, each with at most 100
        names; sent only by a node with a TLS listener)

Histograms have one count per bucket of LATENCY_BUCKETS plus a last +Inf bucket (16 counts), each
the number of observations in that bucket alone: NOT cumulative like Prometheus' `le` buckets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .consumers import USERNAME_HELP, USERNAME_RE
from .schema import NAME_RE, VERSION_RE

# Upper bounds in seconds; the same as the data plane's /-/metrics histograms (dataplane/metrics.py).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BUCKET_COUNT = len(LATENCY_BUCKETS) + 1  # the last one is +Inf
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
# A consumer's 429 `rate_limited` answers (also counted in its 4xx): the error code and the field name.
RATE_LIMITED = "rate_limited"
BREAKER_STATES = ("closed", "open", "half_open")
FORCED_STATES = ("open", "closed")
MAX_TRANSITIONS = 20
MAX_ENDPOINTS = 10_000
# Traffic by consumer (ARCHITECTURE §11): named consumers per endpoint in one report, and in all.
MAX_CONSUMERS_PER_ENDPOINT = 100
MAX_CONSUMER_PAIRS = 50_000
# A hostile report could hold 50,000 bad entries: the refusal names the first ones, not all.
MAX_CONSUMER_PROBLEMS = 50

_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_CERTIFICATES = 1000
MAX_CERTIFICATE_NAMES = 100
# A certificate's name in a report (its file's name without `.pem`) and the DNS names it serves (lower
# case, an optional one-label wildcard): what the data plane sends only when they match.
CERTIFICATE_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
DNS_NAME = re.compile(r"(?:\*\.)?[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")
MAX_DNS_NAME = 253

Problems = dict[str, list[str]]


def is_endpoint_key(value: Any) -> bool:
    """True for an endpoint key `name:version` as the config allows it (configdoc.schema's patterns)."""
    if not isinstance(value, str) or value.count(":") != 1:
        return False
    name, version = value.split(":")
    return (
        len(name) <= 100
        and len(version) <= 32
        and NAME_RE.fullmatch(name) is not None
        and VERSION_RE.fullmatch(version) is not None
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _add(problems: Problems, path: str, message: str) -> None:
    problems.setdefault(path, []).append(message)


def _exact_keys(problems: Problems, path: str, value: dict[str, Any], allowed: Sequence[str]) -> None:
    for key in sorted(set(value) - set(allowed)):
        _add(problems, f"{path}.{key}", "unknown field")
    for key in allowed:
        if key not in value:
            _add(problems, f"{path}.{key}", "this field is required")


def _histogram(problems: Problems, path: str, value: Any) -> None:
    if not isinstance(value, dict):
        _add(problems, path, "must be an object with buckets and sum")
        return
    _exact_keys(problems, path, value, ("buckets", "sum"))
    buckets = value.get("buckets")
    if "buckets" in value and (
        not isinstance(buckets, list) or len(buckets) != BUCKET_COUNT or not all(_count(b) for b in buckets)
    ):
        _add(problems, f"{path}.buckets", f"must be a list of {BUCKET_COUNT} whole numbers >= 0")
    if "sum" in value and not _number(value["sum"]):
        _add(problems, f"{path}.sum", "must be a number of seconds >= 0")


def _endpoint_map(problems: Problems, name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        _add(problems, name, "must be an object mapping endpoint keys to objects")
        return {}
    if len(value) > MAX_ENDPOINTS:
        _add(problems, name, f"must have at most {MAX_ENDPOINTS} endpoints")
        return {}
    checked = {}
    for key, entry in value.items():
        path = f'{name}["{key}"]'
        if not is_endpoint_key(key):
            _add(problems, path, "the key must be an endpoint key name:version")
        elif not isinstance(entry, dict):
            _add(problems, path, "must be an object")
        else:
            checked[key] = entry
    return checked


def validate_counters(value: Any) -> Problems:
    """Problems of a report's `counters` by field path (e.g. `counters["users:v1"].requests.2xx`); {} if fine."""
    problems: Problems = {}
    for key, entry in _endpoint_map(problems, "counters", value).items():
        path = f'counters["{key}"]'
        _exact_keys(problems, path, entry, ("requests", "errors", "retries", "breaker_trips", "duration",
                                             "upstream_duration"))  # fmt: skip
        requests = entry.get("requests")
        if "requests" in entry:
            if not isinstance(requests, dict):
                _add(problems, f"{path}.requests", "must be an object with 2xx, 3xx, 4xx and 5xx")
            else:
                _exact_keys(problems, f"{path}.requests", requests, STATUS_CLASSES)
                for status_class in STATUS_CLASSES:
                    if status_class in requests and not _count(requests[status_class]):
                        _add(problems, f"{path}.requests.{status_class}", "must be a whole number >= 0")
        errors = entry.get("errors")
        if "errors" in entry:
            if not isinstance(errors, dict):
                _add(problems, f"{path}.errors", "must be an object mapping error codes to counts")
            else:
                for code, count in errors.items():
                    if not _ERROR_CODE.fullmatch(code):
                        _add(problems, f"{path}.errors.{code}", "the key must be an error code like upstream_timeout")
                    elif not _count(count):
                        _add(problems, f"{path}.errors.{code}", "must be a whole number >= 0")
        for field in ("retries", "breaker_trips"):
            if field in entry and not _count(entry[field]):
                _add(problems, f"{path}.{field}", "must be a whole number >= 0")
        for field in ("duration", "upstream_duration"):
            if field in entry:
                _histogram(problems, f"{path}.{field}", entry[field])
    return problems


def validate_breakers(value: Any) -> Problems:
    """Problems of a report's `breakers` by field path (e.g. `breakers["users:v1"].state`); {} if fine."""
    problems: Problems = {}
    for key, entry in _endpoint_map(problems, "breakers", value).items():
        path = f'breakers["{key}"]'
        _exact_keys(problems, path, entry, ("state", "forced", "reset_generation", "transitions"))
        if "state" in entry and entry["state"] not in BREAKER_STATES:
            _add(problems, f"{path}.state", f"must be one of {', '.join(BREAKER_STATES)}")
        if "forced" in entry and entry["forced"] is not None and entry["forced"] not in FORCED_STATES:
            _add(problems, f"{path}.forced", "must be open, closed or null")
        if "reset_generation" in entry and not _count(entry["reset_generation"]):
            _add(problems, f"{path}.reset_generation", "must be a whole number >= 0")
        transitions = entry.get("transitions")
        if "transitions" not in entry:
            continue
        if not isinstance(transitions, list) or len(transitions) > MAX_TRANSITIONS:
            _add(problems, f"{path}.transitions", f"must be a list of at most {MAX_TRANSITIONS} transitions")
            continue
        for index, transition in enumerate(transitions):
            item = f"{path}.transitions[{index}]"
            if not isinstance(transition, dict):
                _add(problems, item, "must be an object with from, to and at")
                continue
            _exact_keys(problems, item, transition, ("from", "to", "at"))
            for field in ("from", "to"):
                if field in transition and transition[field] not in BREAKER_STATES:
                    _add(problems, f"{item}.{field}", f"must be one of {', '.join(BREAKER_STATES)}")
            if "at" in transition and not _number(transition["at"]):
                _add(problems, f"{item}.at", "must be unix seconds")
    return problems


def valid_dns_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_DNS_NAME and DNS_NAME.fullmatch(value) is not None


def validate_certificates(value: Any) -> Problems:
    """Problems of a report's `certificates` by field path (e.g. `certificates[0].not_after`); {} if fine."""
    problems: Problems = {}
    if not isinstance(value, list) or len(value) > MAX_CERTIFICATES:
        _add(problems, "certificates", f"must be a list of at most {MAX_CERTIFICATES} certificates")
        return problems
    for index, entry in enumerate(value):
        path = f"certificates[{index}]"
        if not isinstance(entry, dict):
            _add(problems, path, "must be an object with name, names and not_after")
            continue
        _exact_keys(problems, path, entry, ("name", "names", "not_after"))
        if "name" in entry and not (isinstance(entry["name"], str) and CERTIFICATE_NAME.fullmatch(entry["name"])):
            _add(problems, f"{path}.name", "must be 1-200 letters, digits, '.', '_' or '-'")
        names = entry.get("names")
        if "names" in entry and (
            not isinstance(names, list)
            or len(names) > MAX_CERTIFICATE_NAMES
            or not all(valid_dns_name(name) for name in names)
        ):
            _add(problems, f"{path}.names", f"must be a list of at most {MAX_CERTIFICATE_NAMES} lower-case DNS names")
        if "not_after" in entry and not _number(entry["not_after"]):
            _add(problems, f"{path}.not_after", "must be unix seconds")
    return problems


def _class_counts(problems: Problems, path: str, value: Any) -> None:
    """A consumer's counts: 2xx, 3xx, 4xx and 5xx, and optionally rate_limited (at most its 4xx)."""
    if not isinstance(value, dict):
        _add(problems, path, "must be an object with 2xx, 3xx, 4xx and 5xx")
        return
    _exact_keys(problems, path, {key: count for key, count in value.items() if key != RATE_LIMITED}, STATUS_CLASSES)
    for status_class in STATUS_CLASSES:
        if status_class in value and not _count(value[status_class]):
            _add(problems, f"{path}.{status_class}", "must be a whole number >= 0")
    if RATE_LIMITED in value:
        limited, client_errors = value[RATE_LIMITED], value.get("4xx")
        if not _count(limited):
            _add(problems, f"{path}.{RATE_LIMITED}", "must be a whole number >= 0")
        elif _count(client_errors) and limited > client_errors:
            _add(problems, f"{path}.{RATE_LIMITED}", "must be at most 4xx (each 429 is a 4xx answer)")


def is_consumer_username(value: Any) -> bool:
    """True for a consumer username as the config allows it (configdoc.consumers.USERNAME_RE)."""
    return isinstance(value, str) and len(value) <= 64 and USERNAME_RE.fullmatch(value) is not None


def validate_consumers(value: Any) -> Problems:
    """Problems of a report's `consumers` by field path (e.g. `consumers.endpoints["users:v1"].top["a"].2xx`);
    {} if fine. A report over the caps (MAX_CONSUMERS_PER_ENDPOINT named consumers per endpoint,
    MAX_CONSUMER_PAIRS in all) is refused with a problem saying so, before its entries are looked at."""
    problems: Problems = {}
    if not isinstance(value, dict):
        _add(problems, "consumers", "must be an object with epoch and endpoints")
        return problems
    _exact_keys(problems, "consumers", value, ("epoch", "endpoints"))
    if "epoch" in value and (not _count(value["epoch"]) or value["epoch"] < 1):
        _add(problems, "consumers.epoch", "must be a whole number >= 1")
    if "endpoints" not in value:
        return problems
    endpoints = value["endpoints"]
    if not isinstance(endpoints, dict):
        _add(problems, "consumers.endpoints", "must be an object mapping endpoint keys to objects")
        return problems
    if len(endpoints) > MAX_ENDPOINTS:
        _add(problems, "consumers.endpoints", f"must have at most {MAX_ENDPOINTS} endpoints")
        return problems
    pairs = 0
    for key, entry in endpoints.items():
        path = f'consumers.endpoints["{key}"]'
        if not is_endpoint_key(key) or not isinstance(entry, dict):
            if len(problems) < MAX_CONSUMER_PROBLEMS:  # the caps are still checked past the listed problems
                message = (
                    "must be an object with top and other"
                    if is_endpoint_key(key)
                    else "the key must be an endpoint key name:version"
                )
                _add(problems, path, message)
            continue
        top = entry.get("top")
        if isinstance(top, dict):
            if len(top) > MAX_CONSUMERS_PER_ENDPOINT:
                _add(problems, f"{path}.top", f"must list at most {MAX_CONSUMERS_PER_ENDPOINT} consumers")
                return problems
            pairs += len(top)
            if pairs > MAX_CONSUMER_PAIRS:
                _add(problems, "consumers.endpoints", f"must list at most {MAX_CONSUMER_PAIRS} consumers in all")
                return problems
    for key, entry in endpoints.items():  # the entries, once the caps hold
        if not is_endpoint_key(key) or not isinstance(entry, dict):
            continue
        if len(problems) >= MAX_CONSUMER_PROBLEMS:
            _add(problems, "consumers", f"more problems not listed (the first {MAX_CONSUMER_PROBLEMS} are)")
            return problems
        path = f'consumers.endpoints["{key}"]'
        _exact_keys(problems, path, entry, ("top", "other"))
        if "other" in entry:
            _class_counts(problems, f"{path}.other", entry["other"])
        if "top" not in entry:
            continue
        if not isinstance(entry["top"], dict):
            _add(problems, f"{path}.top", "must be an object mapping consumer usernames to counts")
            continue
        for username, counts in entry["top"].items():
            if len(problems) >= MAX_CONSUMER_PROBLEMS:
                _add(problems, "consumers", f"more problems not listed (the first {MAX_CONSUMER_PROBLEMS} are)")
                return problems
            if not is_consumer_username(username):
                shown = str(username)[:80]
                _add(problems, f"{path}.top", f"the key {shown!r} must be a consumer username ({USERNAME_HELP})")
            else:
                _class_counts(problems, f'{path}.top["{username}"]', counts)
    return problems


# --- histograms ------------------------------------------------------------------------------------------


def empty_histogram() -> list[int]:
    return [0] * BUCKET_COUNT


def merge_histograms(histograms: Iterable[Sequence[int]]) -> list[int]:
    """The bucket-wise sum of histograms (lists of BUCKET_COUNT counts; shorter lists count as zeros)."""
    merged = empty_histogram()
    for histogram in histograms:
        for index, count in enumerate(list(histogram)[:BUCKET_COUNT]):
            merged[index] += count
    return merged


def histogram_percentile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) in seconds from per-bucket counts, None without observations.

    Like Prometheus' histogram_quantile: find the bucket holding rank q*total, then interpolate
    linearly within it, assuming its observations are spread evenly between its lower bound (the
    previous bound, 0 for the first bucket) and its upper bound. A rank in the open +Inf bucket
    answers the last finite bound (60 s), meaning "at least this".
    """
    total = sum(buckets)
    if total <= 0:
        return None
    q = min(max(q, 0.0), 1.0)
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            lower = LATENCY_BUCKETS[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS[index]
            return lower + (upper - lower) * max(rank - seen, 0) / count
        seen += count
    return LATENCY_BUCKETS[-1]
