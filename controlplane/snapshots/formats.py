"""The document as text: YAML for people, canonical JSON for machines."""

from __future__ import annotations

from typing import Any

from configdoc import canonical_json, dump_document_yaml

FORMATS = ("yaml", "json")


def render_document(document: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return canonical_json(document).decode("utf-8") + "\n"
    return dump_document_yaml(document)
