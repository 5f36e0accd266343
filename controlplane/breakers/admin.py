"""Breaker policies in the admin (each save is one breaker_policy_* service call, one revision), and the
fleet's breakers page with the force / lift / reset buttons (breakers.services, audited, no revision)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from configdoc import effective_breaker_policy
from configdoc.schema import BREAKER_POLICY_FIELDS
from controlplane.accounts.roles import CONFIG_READ, CONFIG_WRITE
from controlplane.core.actors import Actor
from controlplane.core.admin_forms import JsonObjectFieldsMixin, document_from, form_fields, show_document
from controlplane.core.admin_site import RoleAdmin, ServiceAdmin, describe
from controlplane.core.errors import GatewayError
from controlplane.core.middleware import request_id_of

from . import fleet, services
from .models import BreakerOverride, BreakerPolicy

FORM_FIELDS = tuple(BREAKER_POLICY_FIELDS)
JSON_FIELDS = ("fallback", "cache")


class BreakerPolicyForm(JsonObjectFieldsMixin, forms.ModelForm):  # type: ignore[type-arg]
    json_fields = JSON_FIELDS

    class Meta:
        model = BreakerPolicy
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "name" in self.fields:
            self.fields["name"].required = True
        document = effective_breaker_policy(self.instance.document if self.instance.pk else {})
        show_document(self, BREAKER_POLICY_FIELDS, document, FORM_FIELDS, kwargs.get("initial"))
        if self.instance.pk and "name" in self.fields:
            self.fields["name"].disabled = True

    def document(self) -> dict[str, Any]:
        return document_from(BREAKER_POLICY_FIELDS, self.cleaned_data, FORM_FIELDS)


# Declared on the class (not in __init__) so the admin's form factory knows them.
BreakerPolicyForm.declared_fields.update(form_fields(BREAKER_POLICY_FIELDS, FORM_FIELDS))
BreakerPolicyForm.base_fields.update(BreakerPolicyForm.declared_fields)


@admin.register(BreakerPolicy)
class BreakerPolicyAdmin(ServiceAdmin):
    form = BreakerPolicyForm
    list_display = ["name", "summary", "endpoint_count", "updated_at"]
    search_fields = ["name"]
    ordering = ["name"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return list(FORM_FIELDS) if self.has_change_permission(request, obj) else ["name", "document_json"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if self.has_change_permission(request, obj) else ["name", "document_json"]

    @admin.display(description="document")
    def document_json(self, policy: BreakerPolicy) -> str:
        return policy.canonical

    @admin.display(description="settings")
    def summary(self, policy: BreakerPolicy) -> str:
        p = effective_breaker_policy(policy.document)
        opens, probes = p["failure_threshold"], p["reset_timeout"]
        return f"opens after {opens} failures, probes after {probes}s, {p['fallback_strategy']}"

    @admin.display(description="endpoints")
    def endpoint_count(self, policy: BreakerPolicy) -> int:
        return policy.endpoints.count()

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_through_service(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> BreakerPolicy:
        data = form.document()
        if change:
            data["name"] = form.instance.name
            return services.breaker_policy_update(policy=form.instance, data=data, **self.service_context(request))
        return services.breaker_policy_create(data=data, **self.service_context(request))

    def delete_model(self, request: HttpRequest, obj: BreakerPolicy) -> None:
        services.breaker_policy_delete(policy=obj, **self.service_context(request))


class BreakerActionForm(forms.Form):
    """One button of the breakers page: force open / force closed (optionally for some minutes), lift, reset."""

    action = forms.ChoiceField(
        choices=[("open", "force open"), ("closed", "force closed"), ("lift", "lift"), ("reset", "reset")]
    )
    minutes = forms.IntegerField(required=False, min_value=1, max_value=services.MAX_FORCE_SECONDS // 60)


@admin.register(BreakerOverride)
class BreakersAdmin(RoleAdmin):
    """The fleet's breakers: per endpoint, the aggregate, each live node's state and the override, with the
    force / lift / reset buttons for config:write. The page replaces the model's list and change views;
    each button is one breakers.services call (audited, bumps state_seq)."""

    view_permission = CONFIG_READ
    write_permission = CONFIG_WRITE

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", self.admin_site.admin_view(self.fleet_view), name="{}_{}_changelist".format(*info)),
            path("<str:key>/act/", self.admin_site.admin_view(self.act_view), name="{}_{}_act".format(*info)),
        ]

    def fleet_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        state = request.GET.get("state") or None
        rows = fleet.fleet_breakers(state=state if state in fleet.AGGREGATES else None)
        context = {
            **self.admin_site.each_context(request),
            "title": "Breakers",
            "opts": self.opts,
            "rows": rows,
            "states": fleet.AGGREGATES,
            "state": state,
            "can_write": self.has_change_permission(request),
            "max_minutes": services.MAX_FORCE_SECONDS // 60,
        }
        return TemplateResponse(request, "admin/breakers/fleet.html", context)

    def act_view(self, request: HttpRequest, key: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        endpoint = fleet.endpoint_by_key(key)
        if endpoint is None:
            raise Http404("no such endpoint")
        form = BreakerActionForm(request.POST)
        back = reverse("admin:breakers_breakeroverride_changelist")
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(map(str, errors))}" for field, errors in form.errors.items())
            self.message_user(request, f"Not changed: {problems}", messages.ERROR)
            return HttpResponseRedirect(back)
        action, minutes = form.cleaned_data["action"], form.cleaned_data["minutes"]
        actor, request_id = Actor.from_user(request.user), request_id_of(request)
        try:
            if action == "reset":
                services.breaker_reset(endpoint=endpoint, actor=actor, request_id=request_id)
                done = f"Reset the breaker of {key} on every node."
            else:
                state = None if action == "lift" else action
                seconds = minutes * 60 if minutes and state else None
                services.breaker_force(
                    endpoint=endpoint, state=state, seconds=seconds, actor=actor, request_id=request_id
                )
                if state is None:
                    done = f"Lifted the force on {key}."
                else:
                    done = f"Forced {key} {state}" + (f" for {minutes} minutes." if seconds else " until lifted.")
        except GatewayError as exc:
            self.message_user(request, describe(exc), messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(back)
