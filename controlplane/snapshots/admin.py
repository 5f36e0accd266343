"""The document's global plugins in the admin: one page, saved through `plugins_update` (one revision,
one `plugins.update` audit event), like `PUT /api/v1/plugins/`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from controlplane.core.admin_forms import JsonObjectFieldsMixin, plugins_form_field, plugins_text
from controlplane.core.admin_site import ServiceAdmin

from . import services
from .models import GlobalPlugins

ROW = 1  # DocumentDefaults is one row


class GlobalPluginsForm(JsonObjectFieldsMixin, forms.ModelForm):  # type: ignore[type-arg]
    json_fields = ("plugins",)
    plugins = plugins_form_field(label="Global plugins")

    class Meta:
        model = GlobalPlugins
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The model's column would be shown as a Python dict: the text area shows canonical JSON.
        self.initial["plugins"] = plugins_text(self.instance.plugins)


@admin.register(GlobalPlugins)
class GlobalPluginsAdmin(ServiceAdmin):
    form = GlobalPluginsForm
    fieldsets = [
        (None, {"fields": ["plugins"], "description": "Every endpoint runs these, unless it sets the same name."})
    ]

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        if object_id != str(ROW):
            return None
        # Nothing set yet: the row is made by the first save (through the service).
        return GlobalPlugins.objects.filter(pk=ROW).first() or GlobalPlugins(pk=ROW)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # One object: the list is its page.
        return HttpResponseRedirect(reverse("admin:snapshots_globalplugins_change", args=[ROW]))

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return self.fieldsets
        return [(None, {"fields": ["plugins_json"]})]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if self.has_change_permission(request, obj) else ["plugins_json"]

    @admin.display(description="global plugins")
    def plugins_json(self, row: GlobalPlugins) -> str:
        return row.plugins_canonical or "{}"

    def save_through_service(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> Any:
        services.plugins_update(data=form.cleaned_data.get("plugins") or {}, **self.service_context(request))
        return GlobalPlugins.objects.filter(pk=ROW).first() or GlobalPlugins(pk=ROW)
