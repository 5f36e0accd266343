"""Revisions and the audit log in the admin: read-only, always."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from controlplane.accounts.roles import AUDIT_READ, CONFIG_WRITE, has_gateway_perm
from controlplane.core.actors import Actor
from controlplane.core.admin_site import RoleAdmin, describe
from controlplane.core.errors import GatewayError
from controlplane.core.middleware import request_id_of
from controlplane.core.revisions import shown_changes

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
    fields = ("number", "summary", "actor_label", "request_id", "created_at", "config_sha256", "diff_previous",
              "diff_current", "rollback_link", "changes_json")  # fmt: skip
    readonly_fields = fields

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.rollback_view)
        return [path("<int:number>/rollback/", view, name="core_configrevision_rollback"), *super().get_urls()]

    def _diff_html(self, from_number: int, to_number: int) -> str:
        from controlplane.snapshots.services import revision_diff

        changes = revision_diff(from_number=from_number, to_number=to_number)
        if not changes:
            return format_html("<em>{}</em>", "no differences")
        lines = [line for change in changes for line in change.lines()]
        return format_html("<pre>{}</pre>", "\n".join(lines))

    @admin.display(description="what this revision changed")
    def diff_previous(self, revision: ConfigRevision) -> str:
        if revision.number <= 1:
            return format_html("<em>{}</em>", "the first revision")
        return self._diff_html(revision.number - 1, revision.number)

    def _latest(self) -> int | None:
        return ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()

    @admin.display(description="from this revision to the current config")
    def diff_current(self, revision: ConfigRevision) -> str:
        latest = self._latest()
        if latest is None or latest == revision.number:
            return format_html("<em>{}</em>", "this is the current revision")
        return self._diff_html(revision.number, latest)

    @admin.display(description="rollback")
    def rollback_link(self, revision: ConfigRevision) -> str:
        url = reverse("admin:core_configrevision_rollback", args=[revision.number])
        return format_html('<a class="button" href="{}">Roll back to revision {}…</a>', url, revision.number)

    def rollback_view(self, request: HttpRequest, number: int) -> HttpResponse:
        """GET: what a rollback would change; POST: do it (config:write), as one new revision."""
        from controlplane.snapshots.services import revision_rollback

        revision = get_object_or_404(ConfigRevision, number=number)
        if not has_gateway_perm(request.user, CONFIG_WRITE):
            raise PermissionDenied
        if request.method == "POST":
            try:
                plan = revision_rollback(
                    number=number, actor=Actor.from_user(request.user), request_id=request_id_of(request)
                )
            except GatewayError as exc:
                self.message_user(request, describe(exc), messages.ERROR)
                return HttpResponseRedirect(request.path)
            if plan.revision is None:
                self.message_user(request, f"The config already equals revision {number}: nothing to roll back.")
            else:
                self.message_user(request, f"Rolled back to revision {number} as revision {plan.revision}.")
            return HttpResponseRedirect(reverse("admin:core_configrevision_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Roll back to revision {number}",
            "revision": revision,
            "diff": self._diff_html(latest, number)
            if (latest := self._latest()) is not None and latest != number
            else "",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/core/configrevision/rollback.html", context)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("checkpoint")

    @admin.display(description="sha256")
    def short_sha(self, revision: ConfigRevision) -> str:
        return revision.config_sha256[:12]

    @admin.display(description="changes")
    def changes_json(self, revision: ConfigRevision) -> str:
        return format_html("<pre>{}</pre>", json.dumps(shown_changes(revision.changes), indent=2, sort_keys=True))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    view_permission = AUDIT_READ
    list_display = ["created_at", "actor_label", "action", "object_key", "revision_number"]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["actor_label", "object_key", "action", "request_id"]
    ordering = ["-created_at"]
    fields = ("created_at", "actor_label", "action", "object_type", "object_key", "revision_number", "request_id",
              "before_json", "after_json")  # fmt: skip
    readonly_fields = fields

    @admin.display(description="before")
    def before_json(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.before, indent=2, sort_keys=True))

    @admin.display(description="after")
    def after_json(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.after, indent=2, sort_keys=True))
