"""Strict validation of a data plane's status report (ARCHITECTURE §4). Pure: no database.

    {node_id, boot_id, hostname, version, revision, config_sha256, state_seq,
     result: applied|rejected, error, breakers: {...}, counters: {...}, certificates: [...],
     consumers: {...} (optional)}

A malformed report is refused whole (400, every problem listed by field) and nothing is stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from configdoc.reports import validate_breakers, validate_certificates, validate_consumers, validate_counters
from configdoc.untrusted import JSONInputError, load_json

IDENTIFIER = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
RESULTS = ("applied", "rejected")
MAX_ERROR_CHARS = 4000


class StatusReportError(ValueError):
    """The report is malformed; `fields` maps each bad field to its messages."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(fields.items())))
        self.fields = fields


def _identifier(value: Any) -> str | None:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        return "must be 1-128 characters: letters, digits, '.', '_', ':' or '-'"
    return None


def _text(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value or len(value) > limit:
            return f"must be a non-empty string of at most {limit} characters"
        return None

    return check


def _count_or_null(value: Any) -> str | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        return "must be a whole number >= 0 or null"
    return None


def _sha_or_null(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not _SHA256.match(value)):
        return "must be 64 lowercase hex digits or null"
    return None


def _result(value: Any) -> str | None:
    if value not in RESULTS:
        return f"must be one of {', '.join(RESULTS)}"
    return None


def _error(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_ERROR_CHARS):
        return f"must be a string of at most {MAX_ERROR_CHARS} characters or null"
    return None


def _by_endpoint(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        return "must be an object mapping endpoint keys to objects"
    return None


FIELDS: dict[str, Callable[[Any], str | None]] = {
    "node_id": _identifier,
    "boot_id": _identifier,
    "hostname": _text(255),
    "version": _text(64),
    "revision": _count_or_null,
    "config_sha256": _sha_or_null,
    "state_seq": _count_or_null,
    "result": _result,
    "error": _error,
    "breakers": _by_endpoint,
    "counters": _by_endpoint,
    "certificates": lambda value: None,  # shape checked below (configdoc.reports)
    "consumers": lambda value: None,  # its shape is checked below (configdoc.reports.validate_consumers)
}
# `consumers` absent or null: a node without traffic by consumer to report, or one older than the field.
OPTIONAL: dict[str, Any] = {"error": None, "breakers": {}, "counters": {}, "certificates": [], "consumers": None}


def validate_status_report(body: bytes) -> dict[str, Any]:
    """The report as a dict with every field present, or StatusReportError listing every problem."""
    try:
        # Under configdoc.untrusted's text rule: NUL or a lone surrogate in a string or key would fail on
        # the way into the database. A body too deep to parse is refused; any lesser nesting the report
        # format lacks is refused by the field checks below, which do not recurse, so the depth scan
        # (a third more time to decode a 3 MB report) is skipped.
        report = load_json(body.decode("utf-8"), limit_depth=False)
    except JSONInputError as error:
        where = "non_field_errors" if error.too_deep or not error.path else error.path
        raise StatusReportError({where: [f"body {error.message}" if error.too_deep else error.message]}) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StatusReportError({"non_field_errors": [f"body is not JSON: {error}"]}) from None
    if not isinstance(report, dict):
        raise StatusReportError({"non_field_errors": ["body must be a JSON object"]})
    problems: dict[str, list[str]] = {}
    for key in sorted(set(report) - set(FIELDS)):
        problems[key] = ["unknown field"]
    clean: dict[str, Any] = {}
    for key, check in FIELDS.items():
        if key not in report:
            if key in OPTIONAL:
                clean[key] = OPTIONAL[key]
                continue
            problems[key] = ["this field is required"]
            continue
        message = check(report[key])
        if message:
            problems[key] = [message]
        clean[key] = report[key]
    # The shapes of `breakers` and `counters` (configdoc.reports), problems named by path, e.g.
    # counters["users:v1"].requests.2xx.
    shapes: tuple[tuple[str, Callable[[Any], dict[str, list[str]]]], ...] = (
        ("breakers", validate_breakers),
        ("counters", validate_counters),
        ("certificates", validate_certificates),
    )
    for key, check_shape in shapes:
        if key not in problems:
            problems.update(check_shape(clean[key]))
    if clean["consumers"] is not None:
        problems.update(validate_consumers(clean["consumers"]))
    if problems:
        raise StatusReportError(problems)
    return clean
