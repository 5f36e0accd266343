"""Data-plane tokens and nodes in the admin.

Tokens are credentials, so they need `users:manage`: "Add" issues one (the secret is shown once, on
the page that answers the form, and never stored), "Delete" revokes it with its service user. Both
go through the same services as `manage.py issue_dataplane_token`, and both are audited.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from controlplane.accounts.roles import CONFIG_READ, USERS_MANAGE
from controlplane.core.actors import Actor
from controlplane.core.admin_site import RoleAdmin

from . import services
from .models import DataPlaneNode, DataPlaneToken


class IssueTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="e.g. the node or region: letters, digits, '.', '_' or '-'")


@admin.register(DataPlaneToken)
class DataPlaneTokenAdmin(RoleAdmin):
    view_permission = USERS_MANAGE
    write_permission = USERS_MANAGE
    list_display = ("name", "prefix", "created_at", "last_used_at")
    search_fields = ("name", "prefix")
    fields = ("name", "prefix", "created_at", "last_used_at")
    readonly_fields = fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        form = IssueTokenForm(request.POST or None)
        secret = None
        if request.method == "POST" and form.is_valid():
            try:
                token, secret = services.dataplane_token_issue(
                    name=form.cleaned_data["name"], actor=Actor.from_user(request.user)
                )
            except ValueError as exc:
                form.add_error("name", str(exc))
            else:
                self.message_user(request, f"Token {token.name} issued. Copy it now: it is not shown again.")
        context = {
            **self.admin_site.each_context(request),
            "title": "Issue a data-plane token",
            "form": form,
            "secret": secret,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/dataplanes/dataplanetoken/issue.html", context)

    def delete_model(self, request: HttpRequest, obj: DataPlaneToken) -> None:
        services.dataplane_token_revoke(name=obj.name, actor=Actor.from_user(request.user))
        messages.info(request, f"Token {obj.name} revoked; its data plane can no longer sync.")


@admin.register(DataPlaneNode)
class DataPlaneNodeAdmin(RoleAdmin):
    view_permission = CONFIG_READ
    write_permission = None
    list_display = ("node_id", "hostname", "version", "revision", "state_seq", "result", "last_seen")
    list_filter = ("result",)
    search_fields = ("node_id", "hostname")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}
