"""The Django admin as the operator's tool: access and permissions come from the gateway's roles.

Who may enter is decided by role, not by Django's `is_staff` alone: people with `config:read` or
`users:manage` enter (readonly users see every page read-only); data-plane service users never do.
Every ModelAdmin here writes through the services, so an admin save is one service call, one
revision and its audit events, exactly like the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from controlplane.accounts.roles import CONFIG_READ, CONFIG_WRITE, DATAPLANE, USERS_MANAGE, has_gateway_perm
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError, GatewayError
from controlplane.core.middleware import request_id_of


class GatewayAdminSite(admin.AdminSite):
    site_header = "Gateway control plane"
    site_title = "Gateway"
    index_title = "Configuration, accounts and history"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        if not (user.is_active and user.is_authenticated):
            return False
        if user.groups.filter(name=DATAPLANE).exists():
            return False
        return has_gateway_perm(user, CONFIG_READ) or has_gateway_perm(user, USERS_MANAGE)

    # django-stubs says TemplateResponse; Django's own password_change returns its view's redirect too.
    def password_change(  # type: ignore[override]
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponseBase:
        """Django's page, with the old password counted by the login lockout and the new one saved through
        the accounts services (controlplane/accounts/password_change.py)."""
        from controlplane.accounts.password_change import ThrottledPasswordChangeView

        request.current_app = self.name
        return ThrottledPasswordChangeView.as_view(
            success_url=reverse("admin:password_change_done", current_app=self.name),
            extra_context={**self.each_context(request), **(extra_context or {})},
        )(request)

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The landing page opens on the fleet at a glance (templates/admin/index.html, core.dashboards)."""
        from controlplane.core.dashboards import fleet_context

        return super().index(request, {**fleet_context(request), **(extra_context or {})})


class GatewayAdminConfig(AdminConfig):
    default_site = "controlplane.core.admin_site.GatewayAdminSite"


class RoleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Permissions from the gateway's permission strings instead of Django's per-model ones."""

    view_permission = CONFIG_READ
    write_permission: str | None = CONFIG_WRITE

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_gateway_perm(request.user, self.view_permission)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def _may_write(self, request: HttpRequest) -> bool:
        return self.write_permission is not None and has_gateway_perm(request.user, self.write_permission)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._may_write(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_write(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_write(request)


class ServiceAdmin(RoleAdmin):
    """A ModelAdmin whose saves are service calls. A refused write is shown as an error message and
    rolls back whole (the admin's own transaction included)."""

    def service_context(self, request: HttpRequest) -> dict[str, Any]:
        return {"actor": Actor.from_user(request.user), "request_id": request_id_of(request)}

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except GatewayError as exc:
            self.message_user(request, describe(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except GatewayError as exc:
            self.message_user(request, describe(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Nothing here: `save_related` makes the one service call once the inlines are known too."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        saved = self.save_through_service(request, form, formsets, change)
        for formset in formsets:
            # The admin's change message reads what the formsets saved; the service saved it instead.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        # The admin logs and redirects with the object it holds: give it the saved row's identity.
        form.instance.pk = saved.pk
        form.instance.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})

    def save_through_service(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> Any:
        raise NotImplementedError


def describe(exc: GatewayError) -> str:
    if isinstance(exc, ConfigValidationError) and exc.problems:
        return "Not saved: " + "; ".join(f"{p.path or 'object'}: {p.message}" for p in exc.problems)
    return f"Not saved: {exc.message}"
