"""Users and roles in the admin. Users are written through accounts.services (the §8 escalation
rules apply exactly as in the API); roles are shown read-only; JWTs are not shown."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.http import HttpRequest
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from controlplane.core.admin_site import RoleAdmin, ServiceAdmin

from . import services
from .roles import CONFIG_READ, DATAPLANE, USERS_MANAGE

User = get_user_model()

# Django's and simplejwt's own pages go: users and roles are replaced below, and the JWT lists would
# show a superuser every refresh token in clear and let the blacklist be edited past the services and
# the audit log (a password change, deactivation or delete revokes a user's tokens, through the services).
for model in (User, Group, OutstandingToken, BlacklistedToken):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


def _role_choices() -> list[tuple[str, str]]:
    return [(g.name, g.name) for g in Group.objects.exclude(name=DATAPLANE).order_by("name")]


class UserForm(forms.ModelForm):  # type: ignore[type-arg]
    roles = forms.MultipleChoiceField(choices=_role_choices, required=False, widget=forms.CheckboxSelectMultiple)
    new_password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="required for a new user; set it to change the password (every token of the user is revoked)",
    )

    class Meta:
        model = User
        fields = ["username", "email", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and "username" in self.fields:  # a read-only page's form has no fields
            self.fields["username"].disabled = True
            self.fields["roles"].initial = list(self.instance.groups.values_list("name", flat=True))

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if not self.instance.pk and not cleaned.get("new_password"):
            self.add_error("new_password", "a new user needs a password")
        return cleaned


@admin.register(User)
class UserAdmin(ServiceAdmin):
    view_permission = USERS_MANAGE
    write_permission = USERS_MANAGE
    form = UserForm
    list_display = ["username", "email", "role_list", "is_active", "last_login"]
    list_filter = ["is_active", "groups"]
    search_fields = ["username", "email"]
    ordering = ["username"]

    def _is_dataplane(self, obj: Any) -> bool:
        return obj is not None and obj.groups.filter(name=DATAPLANE).exists()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A data-plane service user lives and dies with its token (the services refuse any other
        # change), so its page is read-only rather than a form whose every save is refused.
        return super().has_change_permission(request, obj) and not self._is_dataplane(obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and not self._is_dataplane(obj)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if not self.has_change_permission(request, obj):
            return ["username", "email", "is_active", "role_list", "last_login"]
        return ["username", "email", "is_active", "roles", "new_password"]

    @admin.display(description="roles")
    def role_list(self, user: Any) -> str:
        return ", ".join(sorted(g.name for g in user.groups.all()))

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("groups")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_through_service(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> Any:
        cleaned = form.cleaned_data
        if change:
            data = {"email": cleaned.get("email", ""), "is_active": cleaned["is_active"], "roles": cleaned["roles"]}
            if cleaned.get("new_password"):
                data["password"] = cleaned["new_password"]
            return services.user_update(user=form.instance, data=data, by=request.user, **self.service_context(request))
        return services.user_create(
            username=cleaned["username"],
            password=cleaned["new_password"],
            email=cleaned.get("email", ""),
            is_active=cleaned["is_active"],
            roles=cleaned["roles"],
            by=request.user,
            **self.service_context(request),
        )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.user_delete(user=obj, by=request.user, **self.service_context(request))


@admin.register(Group)
class RolesAdmin(RoleAdmin):
    """Roles are data fixed by a migration: shown, never edited here."""

    view_permission = CONFIG_READ
    write_permission = None
    list_display = ["name", "permission_list"]
    fields = ("name", "permission_list")
    readonly_fields = fields

    @admin.display(description="permissions")
    def permission_list(self, group: Group) -> str:
        return ", ".join(sorted(p.codename.replace("_", ":", 1) for p in group.permissions.all()))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}
