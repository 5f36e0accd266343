"""Data-plane tokens and nodes in the admin.

Nodes are read-only for everyone (config:read to see them): their rows are the nodes' own reports.
The one write is the "Retire" action (config:write): it forgets nodes stopped on purpose, through the
same audited service as `POST dataplanes/{node_id}/retire/`.

Tokens are credentials, so they need `users:manage`: "Add" issues one (the secret is shown once, on
the page that answers the form, and never stored), "Delete" revokes it with its service user. Both
go through the same services as `manage.py issue_dataplane_token`, and both are audited.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from controlplane.accounts.roles import CONFIG_READ, CONFIG_WRITE, USERS_MANAGE, has_gateway_perm
from controlplane.core.actors import Actor
from controlplane.core.admin_site import RoleAdmin
from controlplane.core.middleware import request_id_of
from controlplane.core.models import ConfigRevision

from . import services
from .api.serializers import certificates, node_lag, open_breakers
from .models import DataPlaneNode, DataPlaneToken
from .selectors import NODE_STATES, NodeClock

# Characters of a node's error shown in the list (the change page shows it whole).
ERROR_SHOWN = 400


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


class NodeStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(state, state) for state in NODE_STATES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[DataPlaneNode]) -> QuerySet[DataPlaneNode]:
        if self.value() in NODE_STATES:
            return NodeClock.at().filter(queryset, str(self.value()))
        return queryset


def _expiry(entry: dict[str, Any]) -> str:
    """`api: expires in 12 d` / `old: EXPIRED 2 d ago`."""
    seconds = entry["expires_in"]
    days = abs(seconds) / 86400
    span = f"{days:.0f} d" if days >= 1 else f"{abs(seconds) / 3600:.0f} h"
    return f"{entry['name']}: expires in {span}" if seconds > 0 else f"{entry['name']}: EXPIRED {span} ago"


@admin.register(DataPlaneNode)
class DataPlaneNodeAdmin(RoleAdmin):
    """The nodes' last reports, read-only for everyone: only the nodes themselves write them (§4).
    Operators with config:write may retire nodes (the "Retire" action)."""

    view_permission = CONFIG_READ
    write_permission = None
    list_display = (
        "node_id",
        "token_name",
        "hostname",
        "revision",
        "lag",
        "state",
        "last_seen",
        "result",
        "short_error",
        "tls_expiry",
    )
    list_filter = (NodeStateFilter, "result", "token_name")
    search_fields = ("node_id", "hostname", "token_name")
    fields = (
        "node_id",
        "token_name",
        "boot_id",
        "hostname",
        "version",
        "revision",
        "lag",
        "config_sha256",
        "state_seq",
        "state",
        "last_seen",
        "result",
        "error",
        "open_breakers",
        "breakers",
        "tls_certificates",
    )
    readonly_fields = fields
    actions = ["retire_selected"]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        if not has_gateway_perm(request.user, CONFIG_WRITE):
            actions.pop("retire_selected", None)
        return actions

    @admin.action(description="Retire the selected nodes (stopped on purpose; one that reports again reappears)")
    def retire_selected(self, request: HttpRequest, queryset: QuerySet[DataPlaneNode]) -> None:
        if not has_gateway_perm(request.user, CONFIG_WRITE):
            return
        actor = Actor.from_user(request.user)
        retired = []
        for node_id in queryset.values_list("node_id", flat=True):
            try:
                services.node_retire(node_id=node_id, actor=actor, request_id=request_id_of(request))
            except DataPlaneNode.DoesNotExist:
                continue  # retired meanwhile (another operator, or the purge)
            retired.append(node_id)
        self.message_user(request, f"Retired {len(retired)} node(s): {', '.join(retired) or 'none'}.", messages.INFO)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self._latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
        self._clock = NodeClock.at()
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        self._latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
        self._clock = NodeClock.at()
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="lag")
    def lag(self, node: DataPlaneNode) -> str:
        lag = node_lag(node, getattr(self, "_latest", None))
        return "-" if lag is None else f"{lag} behind" if lag else "current"

    @admin.display(description="state")
    def state(self, node: DataPlaneNode) -> str:
        return (getattr(self, "_clock", None) or NodeClock.at()).state(node)

    @admin.display(description="error")
    def short_error(self, node: DataPlaneNode) -> str:
        # Long enough for a refused snapshot's reason to name what is wrong, e.g. the unset environment
        # variable of a `{env: NAME}` secret after the path of the credential that needs it.
        return node.error if len(node.error) <= ERROR_SHOWN else node.error[: ERROR_SHOWN - 1] + "…"

    @admin.display(description="TLS expiry")
    def tls_expiry(self, node: DataPlaneNode) -> str:
        """The soonest-expiring certificate of the node's TLS listener, "-" without one."""
        found = certificates(node)
        return _expiry(found[0]) if found else "-"

    @admin.display(description="TLS certificates")
    def tls_certificates(self, node: DataPlaneNode) -> str:
        found = certificates(node)
        if not found:
            return "-"
        return "; ".join(f"{_expiry(entry)} ({', '.join(entry.get('names') or []) or 'no names'})" for entry in found)

    @admin.display(description="open breakers")
    def open_breakers(self, node: DataPlaneNode) -> int:
        return open_breakers(node)
