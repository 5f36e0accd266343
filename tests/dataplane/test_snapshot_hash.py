"""The sync client hashes a snapshot's document an endpoint at a time (dataplane.snapshot.document_sha256)
so its thread lets the event loop run; the hash must stay the one the control plane sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from configdoc import config_sha256
from dataplane.snapshot import document_sha256

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "snapshot-golden.json"


def test_the_golden_snapshots_document_hashes_to_its_config_sha256() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert document_sha256(golden["config"]) == golden["config_sha256"]


@pytest.mark.parametrize(
    "document",
    [
        {
            "format_version": 1.0,
            "health_check": {"interval": 10.0},
            "endpoints": [{"name": "café", "timeout": 30.0, "retries": {"on": ["5xx", 502]}}, {"name": "b"}],
            "breaker_policies": [{"name": "default", "failure_rate_threshold": 50.5}],
        },
        {"format_version": 1, "endpoints": []},
        {"endpoints": "not a list"},
        ["not", "a", "mapping"],
    ],
)
def test_the_hash_is_config_sha256_for_any_document(document: Any) -> None:
    assert document_sha256(document) == config_sha256(document)
