"""The example documents under config/examples/ load without problems and point only at 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from configdoc import load_document

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


@pytest.mark.parametrize("name", ["gateway.yaml", "seed-config.yaml"])
def test_an_example_document_loads_without_problems_and_stays_on_this_machine(name: str) -> None:
    result = load_document((EXAMPLES / name).read_bytes())
    assert result.problems == []
    urls = [target["url"] for endpoint in result.document["endpoints"] for target in endpoint["targets"]]
    assert urls and {urlsplit(url).hostname for url in urls} == {"127.0.0.1"}


def test_the_seed_example_is_the_seed_format_and_only_warns_about_log_level() -> None:
    result = load_document((EXAMPLES / "seed-config.yaml").read_bytes())
    assert "format_version" not in (EXAMPLES / "seed-config.yaml").read_text()
    assert [w.path for w in result.warnings] == ["log_level"]
    assert [e["name"] for e in result.document["endpoints"]] == ["httpbin_get", "secure_api"]
