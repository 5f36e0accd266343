"""Shared API plumbing for representations that are config-document objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

READ_ONLY_KEYS = frozenset({"id", "key", "created_at", "updated_at", "status"})


class DocumentObjectSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Input is passed to the services as the document's own mapping, minus the read-only keys.

    Validation is configdoc's (through the services), so the API, the admin and import_config
    refuse exactly the same things with exactly the same messages. The declared fields describe the
    representation for the OpenAPI schema.
    """

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        return {key: value for key, value in data.items() if key not in READ_ONLY_KEYS}
