"""Consumers in the admin (each save is one consumers.services call, one revision), with their credentials
listed by label or username, never by value, and the keys page: issue a key (shown once, with a copy
button) or delete one by label.

The form's fields come from consumers.schema.CONSUMER_API_FIELDS (configdoc's schema, hashes hidden,
passwords in clear): scalars and word lists through core.admin_forms, lists of credentials as JSON text
areas whose help lists each credential's fields.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from configdoc.consumers import KEY_AUTH_CREDENTIAL_FIELDS, effective_consumer
from configdoc.schema import Field
from controlplane.core.admin_forms import _help, document_from, form_field, initial_from
from controlplane.core.admin_site import ServiceAdmin, describe
from controlplane.core.errors import GatewayError

from . import services
from .models import Consumer
from .redaction import public_consumer
from .schema import CONSUMER_API_FIELDS, READ_ONLY


def _credential_list(spec: Field) -> bool:
    return spec.kind == "list" and spec.item is not None and spec.item.kind == "object"


FORM_FIELDS = tuple(name for name in CONSUMER_API_FIELDS if name not in READ_ONLY)
JSON_LIST_FIELDS = tuple(name for name in FORM_FIELDS if _credential_list(CONSUMER_API_FIELDS[name]))
PLAIN_FIELDS = tuple(name for name in FORM_FIELDS if name not in JSON_LIST_FIELDS)


def _json_list_field(name: str, spec: Field) -> forms.CharField:
    assert spec.item is not None
    listed = ", ".join(f"{key} ({_help(field) or field.help or field.kind})" for key, field in spec.item.fields.items())
    return forms.CharField(
        required=False,
        label=name.replace("_", " ").capitalize(),
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "style": "font-family: monospace"}),
        help_text=f"JSON list of objects; {spec.help}. Fields: {listed}",
    )


class ConsumerForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Consumer
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shown = public_consumer(effective_consumer(self.instance.document if self.instance.pk else {"username": ""}))
        given = kwargs.get("initial") or {}
        for name, value in initial_from(CONSUMER_API_FIELDS, shown, PLAIN_FIELDS).items():
            if name in self.fields and name not in given:
                self.initial[name] = value if value is not None else ""
        for name in JSON_LIST_FIELDS:
            if name in self.fields and name not in given:
                self.initial[name] = json.dumps(shown.get(name) or [], indent=1) if shown.get(name) else ""
        if "username" in self.fields:
            self.fields["username"].required = True
            if self.instance.pk:
                self.fields["username"].disabled = True

    def _post_clean(self) -> None:
        # The inputs are document fields, not model fields: the service writes the row.
        return None

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        for name in JSON_LIST_FIELDS:
            text = cleaned.get(name)
            if not text or not text.strip():
                cleaned[name] = []
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                self.add_error(name, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
                continue
            if not isinstance(value, list):
                self.add_error(name, "must be a JSON list")
                continue
            cleaned[name] = value
        return cleaned

    def document(self) -> dict[str, Any]:
        data = document_from(CONSUMER_API_FIELDS, self.cleaned_data, PLAIN_FIELDS)
        for name in JSON_LIST_FIELDS:
            data[name] = self.cleaned_data.get(name) or []
        return data


# Declared on the class (not in __init__) so the admin's form factory knows them.
ConsumerForm.declared_fields.update(
    {
        name: _json_list_field(name, CONSUMER_API_FIELDS[name])
        if name in JSON_LIST_FIELDS
        else form_field(name, CONSUMER_API_FIELDS[name])
        for name in FORM_FIELDS
    }
)
ConsumerForm.base_fields.update(ConsumerForm.declared_fields)

_LABEL = KEY_AUTH_CREDENTIAL_FIELDS["label"]


class IssueKeyForm(forms.Form):
    label = forms.CharField(
        required=False,
        max_length=_LABEL.max_length,
        help_text=f"{_LABEL.help}; {_LABEL.pattern_help}. Empty: key-<date>.",
    )


@admin.register(Consumer)
class ConsumerAdmin(ServiceAdmin):
    form = ConsumerForm
    list_display = ["username", "custom_id", "group_list", "credentials"]
    search_fields = ["username", "custom_id"]
    ordering = ["username"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return [*FORM_FIELDS, "keys"] if obj is not None else list(FORM_FIELDS)
        return ["username", "custom_id", "group_list", "keys", "jwt_issuers", "basic_usernames"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return ["keys"] if obj is not None else []
        return ["username", "custom_id", "group_list", "keys", "jwt_issuers", "basic_usernames"]

    @admin.display(description="groups")
    def group_list(self, consumer: Consumer) -> str:
        return ", ".join(consumer.document.get("groups", []))

    @admin.display(description="credentials")
    def credentials(self, consumer: Consumer) -> str:
        document = consumer.document
        parts = [f"{len(document.get(kind, []))} {kind}" for kind in ("key_auth", "jwt", "basic_auth")]
        return ", ".join(parts)

    @admin.display(description="API keys (by label)")
    def keys(self, consumer: Consumer) -> str:
        labels = [c["label"] for c in consumer.document.get("key_auth", [])]
        listed = format_html_join(", ", "<code>{}</code>", ((label,) for label in labels)) if labels else "none"
        url = reverse("admin:consumers_consumer_keys", args=[consumer.pk])
        return format_html('{} <a class="button" href="{}">Keys: issue or delete…</a>', listed, url)

    @admin.display(description="JWT issuers")
    def jwt_issuers(self, consumer: Consumer) -> str:
        return ", ".join(f"{c['issuer']} ({c['algorithm']})" for c in consumer.document.get("jwt", []))

    @admin.display(description="basic-auth usernames")
    def basic_usernames(self, consumer: Consumer) -> str:
        return ", ".join(c["username"] for c in consumer.document.get("basic_auth", []))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_through_service(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> Consumer:
        data = form.document()
        if change:
            data["username"] = form.instance.username
            return services.consumer_update(consumer=form.instance, data=data, **self.service_context(request))
        return services.consumer_create(data=data, **self.service_context(request))

    def delete_model(self, request: HttpRequest, obj: Consumer) -> None:
        services.consumer_delete(consumer=obj, **self.service_context(request))

    # --- the keys page ------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:pk>/keys/", self.admin_site.admin_view(self.keys_view), name="consumers_consumer_keys"),
            path(
                "<int:pk>/keys/delete/",
                self.admin_site.admin_view(self.delete_key_view),
                name="consumers_consumer_delete_key",
            ),
            *super().get_urls(),
        ]

    def _consumer(self, request: HttpRequest, pk: int, *, write: bool) -> Consumer:
        allowed = self.has_change_permission(request) if write else self.has_view_permission(request)
        if not allowed:
            raise PermissionDenied
        return get_object_or_404(Consumer, pk=pk)

    def keys_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET: the consumer's keys by label, the issue form and a delete button per key. POST (config:write):
        issue a key and show it, this once."""
        consumer = self._consumer(request, pk, write=request.method == "POST")
        form = IssueKeyForm(request.POST if request.method == "POST" else None)
        key = label = None
        if request.method == "POST" and form.is_valid():
            try:
                consumer, label, key = services.consumer_key_create(
                    consumer=consumer, label=form.cleaned_data["label"] or None, **self.service_context(request)
                )
            except GatewayError as exc:
                self.message_user(request, describe(exc), messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "title": f"API keys of {consumer.username}",
            "opts": self.opts,
            "consumer": consumer,
            "labels": [c["label"] for c in consumer.document.get("key_auth", [])],
            "form": form,
            "key": key,
            "label": label,
            "can_write": self.has_change_permission(request),
        }
        response = TemplateResponse(request, "admin/consumers/consumer/keys.html", context)
        if key is not None:
            response["Cache-Control"] = "no-store"  # the page holds the key: no cache may keep it
        return response

    def delete_key_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        consumer = self._consumer(request, pk, write=True)
        label = request.POST.get("label", "")
        if not label:
            raise Http404("no key label")
        try:
            services.consumer_key_delete(consumer=consumer, label=label, **self.service_context(request))
        except GatewayError as exc:
            self.message_user(request, describe(exc), messages.ERROR)
        else:
            self.message_user(request, f"Deleted the key {label} of {consumer.username}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:consumers_consumer_keys", args=[consumer.pk]))
