"""Revisions and the audit log in the admin: read-only, always."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from controlplane.accounts.roles import AUDIT_READ
from controlplane.core.admin_site import RoleAdmin

from .models import AuditEvent, ConfigRevision


class ReadOnlyAdmin(RoleAdmin):
    write_permission = None

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}


@admin.register(ConfigRevision)
class ConfigRevisionAdmin(ReadOnlyAdmin):
    list_display = ["number", "summary", "actor_label", "created_at", "short_sha"]
    search_fields = ["summary", "actor_label"]
    list_filter = ["created_at"]
    ordering = ["-number"]
    fields = ["number", "summary", "actor_label", "request_id", "created_at", "config_sha256", "changes_json"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("checkpoint")

    @admin.display(description="sha256")
    def short_sha(self, revision: ConfigRevision) -> str:
        return revision.config_sha256[:12]

    @admin.display(description="changes")
    def changes_json(self, revision: ConfigRevision) -> str:
        return format_html("<pre>{}</pre>", json.dumps(revision.changes, indent=2, sort_keys=True))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    view_permission = AUDIT_READ
    list_display = ["created_at", "actor_label", "action", "object_key", "revision_number"]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["actor_label", "object_key", "action", "request_id"]
    ordering = ["-created_at"]
    fields = ["created_at", "actor_label", "action", "object_type", "object_key", "revision_number", "request_id",
              "before_json", "after_json"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="before")
    def before_json(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.before, indent=2, sort_keys=True))

    @admin.display(description="after")
    def after_json(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.after, indent=2, sort_keys=True))
