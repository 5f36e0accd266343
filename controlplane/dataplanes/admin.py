"""Admin views of data-plane tokens (read-only: issue and revoke with `manage.py issue_dataplane_token`) and nodes."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import DataPlaneNode, DataPlaneToken


class _ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DataPlaneToken)
class DataPlaneTokenAdmin(_ReadOnly):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at")
    exclude = ("secret_sha256",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoking is audited and removes the service user too: the command does it.
        return False


@admin.register(DataPlaneNode)
class DataPlaneNodeAdmin(_ReadOnly):
    list_display = ("node_id", "hostname", "version", "revision", "state_seq", "result", "last_seen")
    list_filter = ("result",)
    search_fields = ("node_id", "hostname")
