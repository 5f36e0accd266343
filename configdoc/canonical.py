"""Canonical JSON and the document's hash (ARCHITECTURE §3).

Canonical form is what is hashed and what revisions store: JSON with sorted keys, no whitespace
(`separators=(",", ":")`), UTF-8 without escaping, and whole numbers written as integers (`30.0` and
`30` are the same setting, so they must hash the same).
"""

from __future__ import annotations

import json
from hashlib import sha256
from typing import Any


def _whole_numbers_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers_as_int(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_whole_numbers_as_int(item) for item in value]
    return value


def canonical_json(value: Any) -> bytes:
    """`value` as canonical JSON bytes."""
    return json.dumps(
        _whole_numbers_as_int(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def config_sha256(document: Any) -> str:
    """The hex sha256 of the document's canonical JSON: the `config_sha256` of revisions and snapshots."""
    return sha256(canonical_json(document)).hexdigest()
