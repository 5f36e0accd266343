"""Breaker policies in the admin; each save is one breaker_policy_* service call (one revision)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from configdoc import effective_breaker_policy
from configdoc.schema import BREAKER_POLICY_FIELDS
from controlplane.core.admin_forms import JsonObjectFieldsMixin, document_from, form_fields, initial_from
from controlplane.core.admin_site import ServiceAdmin

from . import services
from .models import BreakerPolicy

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
        for name, value in initial_from(BREAKER_POLICY_FIELDS, document, FORM_FIELDS).items():
            if name in self.fields:
                self.fields[name].initial = value
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
