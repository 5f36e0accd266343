"""Endpoints in the admin: inline targets, list columns and filters, enable/disable actions.

One save (the endpoint and all its inline targets) is one `endpoint_create`/`endpoint_update` call,
so one revision; a bulk action is one `endpoints_set_enabled` call.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from configdoc import effective_endpoint
from configdoc.matchers import HOSTS, MATCH_HEADERS
from configdoc.plugins import ENDPOINT_FLAGS
from configdoc.schema import ENDPOINT_FIELDS
from configdoc.splits import TRAFFIC_SPLIT, TRAFFIC_SPLIT_HELP
from configdoc.validate import normalize_target_url
from controlplane.core.admin_forms import (
    JsonObjectFieldsMixin,
    document_from,
    form_fields,
    plugins_form_field,
    plugins_text,
    show_document,
)
from controlplane.core.admin_site import ServiceAdmin, describe
from controlplane.core.dashboards import endpoint_dashboard_view
from controlplane.core.errors import GatewayError
from controlplane.health.charts import Series, latency_chart
from controlplane.health.models import BADGE_COLOURS_BY_STATUS, HealthStatus
from controlplane.health.selectors import endpoint_health_report
from controlplane.health.services import check_plans

from . import services
from .api.resolve import HEADER, HOST_TEXT, MAX_HEADER, MAX_HEADERS, METHOD, header_lines, resolve_request
from .models import Endpoint, Target

FORM_FIELDS = (
    "name", "version", "default", "enabled", "description", "tags", "methods", "paths", "strip_path",
    "timeout", "connect_timeout", "read_idle_timeout", "max_body_bytes", "auth_type", "breaker_policy",
    "retries", "outlier", "tls", "health_check", "preserve_host", "https_redirect", "websocket", "protocol",
    "hosts", "traffic_split",
)  # fmt: skip
JSON_FIELDS = ("retries", "outlier", "tls", "health_check", "plugins", "match_headers", "traffic_split")
# The endpoint's fields as configdoc's schema has them, §11's preserve_host and §13's https_redirect and
# websocket included (plugins, a mapping of plugin configs, has a form field of its own:
# core.admin_forms.plugins_form_field).
# §12's hosts is a comma-separated list like methods; match_headers (a map) a JSON text area of its own;
# traffic_split a JSON object like retries (`{}`: no split).
FORM_SCHEMA = {**ENDPOINT_FIELDS, **ENDPOINT_FLAGS, "hosts": HOSTS, "traffic_split": TRAFFIC_SPLIT}


HEALTH_WINDOWS = (("last_100", "last 100 checks"), ("24h", "24 h"), ("7d", "7 d"), ("30d", "30 d"))


def status_badge(status: str) -> str:
    return format_html(
        '<span class="health-badge health-{}" style="background:{};color:#fff;padding:1px 6px;border-radius:8px">'
        "{}</span>",
        status,
        BADGE_COLOURS_BY_STATUS[HealthStatus(status)],
        status,
    )


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f} %"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:g} ms"


class EndpointForm(JsonObjectFieldsMixin, forms.ModelForm):  # type: ignore[type-arg]
    json_fields = JSON_FIELDS

    class Meta:
        model = Endpoint
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for required in ("name", "version"):
            if required in self.fields:
                self.fields[required].required = True
        document = effective_endpoint(self.instance.document) if self.instance.pk else effective_endpoint({})
        if self.instance.pk:
            document["health_check"] = self.instance.document.get("health_check", {})
        else:
            document["health_check"] = {}
        for flag, spec in ENDPOINT_FLAGS.items():
            document.setdefault(flag, spec.default)
        show_document(self, FORM_SCHEMA, document, FORM_FIELDS, kwargs.get("initial"))
        if "plugins" in self.fields:
            # Canonical (sparse) configs, not the effective ones: what is shown is what was set.
            self.initial["plugins"] = plugins_text(self.instance.document.get("plugins") if self.instance.pk else None)
        if "match_headers" in self.fields:
            self.initial["match_headers"] = plugins_text(
                self.instance.document.get("match_headers") if self.instance.pk else None
            )

    def document(self) -> dict[str, Any]:
        document = document_from(FORM_SCHEMA, self.cleaned_data, FORM_FIELDS)
        if self.cleaned_data.get("plugins"):
            document["plugins"] = self.cleaned_data["plugins"]
        if self.cleaned_data.get("match_headers"):
            document["match_headers"] = self.cleaned_data["match_headers"]
        if not document.get("default"):
            # Unticked means "not asking to be the default": a default moves by ticking another version.
            document.pop("default", None)
        return document


# Declared on the class (not in __init__) so the admin's form factory knows them.
EndpointForm.declared_fields.update(form_fields(FORM_SCHEMA, FORM_FIELDS))
EndpointForm.declared_fields["plugins"] = plugins_form_field()
# The generated help would call `version` optional (it has no default); say what a split takes instead.
EndpointForm.declared_fields["traffic_split"].help_text = (
    'JSON object, {} for none, e.g. {"version": "v2", "percent": 10, "header": {"X-Canary": ["1"]}, '
    '"sticky": "cookie", "sticky_name": "session"}: version (required), percent (0–100, steps of 0.01; default 0), '
    "header (name → values), sticky (header, cookie, ip or null), sticky_name (the header or cookie); "
    + TRAFFIC_SPLIT_HELP
)
EndpointForm.declared_fields["match_headers"] = forms.CharField(
    required=False,
    label="Match headers",
    widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "style": "font-family: monospace"}),
    help_text='JSON object, header name → list of values, e.g. {"X-Tenant": ["acme"]}; ' + MATCH_HEADERS.help,
)
EndpointForm.base_fields.update(EndpointForm.declared_fields)


class RouteDebugForm(forms.Form):
    """The route-debug page's request: the same fields, and rules, as `routes/resolve/`'s query."""

    path = forms.CharField(max_length=2048, strip=False, help_text="the raw request path, e.g. /users/42")
    method = forms.RegexField(METHOD, required=False, initial="GET", help_text="default GET")
    host = forms.RegexField(HOST_TEXT, required=False, max_length=300, strip=False, help_text="the Host header")
    headers = forms.CharField(
        required=False,
        max_length=MAX_HEADERS * MAX_HEADER,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="one `Name: value` per line (a sticky cookie: `Cookie: name=value`)",
    )
    client_ip = forms.GenericIPAddressField(
        required=False, help_text="the client's address, for a traffic split with sticky: ip"
    )

    def clean_headers(self) -> list[str]:
        lines = header_lines(self.cleaned_data["headers"])
        if len(lines) > MAX_HEADERS or any(not HEADER.fullmatch(line) for line in lines):
            raise forms.ValidationError(
                f"one `Name: value` per line (a header name, a colon, a value), at most {MAX_HEADERS} lines"
            )
        return lines


class TargetForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Target
        fields = ["url", "weight", "enabled"]

    def clean_url(self) -> str:
        problems: list[Any] = []
        url = normalize_target_url(self.cleaned_data["url"], "url", problems, allow_link_local=True)
        if problems:
            raise forms.ValidationError([p.message for p in problems])
        return url or ""


class TargetInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Target
    form = TargetForm
    extra = 1
    min_num = 1

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.admin_site._registry[Endpoint].has_change_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request)


@admin.register(Endpoint)
class EndpointAdmin(ServiceAdmin):
    form = EndpointForm
    inlines = [TargetInline]
    list_display = [
        "key", "is_default", "enabled", "target_count", "health_badges", "dashboard_link", "breaker_policy", "tag_list",
        "updated_at",
    ]  # fmt: skip
    list_filter = ["enabled", "is_default", "breaker_policy"]
    search_fields = ["name", "version", "description"]
    ordering = ["name", "version"]
    actions = ["enable_selected", "disable_selected"]
    fieldsets = [
        (None, {"fields": ["name", "version", "default", "enabled", "description", "tags"]}),
        ("Routing", {"fields": ["methods", "paths", "strip_path", "auth_type"]}),
        ("Timeouts and limits", {"fields": ["timeout", "connect_timeout", "read_idle_timeout", "max_body_bytes"]}),
        ("Resilience", {"fields": ["breaker_policy", "retries", "outlier", "tls", "health_check"]}),
        ("Routing (§12)", {"fields": ["hosts", "match_headers", "traffic_split"]}),
        ("Plugins", {"fields": ["preserve_host", "https_redirect", "websocket", "protocol", "plugins"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Endpoint]:
        # The health counts are annotated here, so the list's badges cost no query per row.
        counts = {
            f"targets_{status}": Count("targets", filter=Q(targets__health__status=status), distinct=True)
            for status in (HealthStatus.HEALTHY, HealthStatus.UNHEALTHY)
        }
        return (
            super()
            .get_queryset(request)
            .select_related("breaker_policy")
            .prefetch_related("targets")
            .annotate(**counts)
        )

    @admin.display(description="health")
    def health_badges(self, endpoint: Endpoint) -> str:
        """Healthy / unhealthy / unknown target counts (never checked counts as unknown), linked to the
        endpoint's health page."""
        healthy = getattr(endpoint, "targets_healthy", 0)
        unhealthy = getattr(endpoint, "targets_unhealthy", 0)
        counts = {
            HealthStatus.HEALTHY: healthy,
            HealthStatus.UNHEALTHY: unhealthy,
            HealthStatus.UNKNOWN: len(endpoint.targets.all()) - healthy - unhealthy,
        }
        badges = format_html_join(
            " ",
            '<span class="health-badge health-{}" title="{} {}" '
            'style="background:{};color:#fff;padding:1px 6px;border-radius:8px">{}</span>',
            (
                (status.value, count, status.value, BADGE_COLOURS_BY_STATUS[status] if count else "#bdbdbd", count)
                for status, count in counts.items()
            ),
        )
        url = reverse("admin:routing_endpoint_health", args=[endpoint.pk])
        return format_html('<a href="{}">{}</a>', url, badges)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.health_view)
        dashboard = self.admin_site.admin_view(partial(endpoint_dashboard_view, self))
        debug = self.admin_site.admin_view(self.route_debug_view)
        return [
            path("route-debug/", debug, name="routing_endpoint_route_debug"),
            path("<int:object_id>/health/", view, name="routing_endpoint_health"),
            path("<int:object_id>/dashboard/", dashboard, name="routing_endpoint_dashboard"),
            *super().get_urls(),
        ]

    def route_debug_view(self, request: HttpRequest) -> HttpResponse:
        """Which endpoint a request would reach (config:read): the answer of `routes/resolve/`, from the
        same configdoc matcher the data plane runs, with the matcher that decided (§12)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RouteDebugForm(request.GET or None)
        answer: dict[str, Any] | None = None
        code = 0
        if form.is_valid():
            data = form.cleaned_data
            code, answer = resolve_request(
                path=data["path"],
                method=data["method"] or "GET",
                host=data["host"],
                headers=data["headers"],
                client_ip=data.get("client_ip") or None,
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Route debug",
            "opts": self.model._meta,
            "form": form,
            "answer": answer,
            "status": code,
        }
        return TemplateResponse(request, "admin/routing/endpoint/route_debug.html", context)

    def health_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Per-target status, uptime, p50/p95 and response-time charts of one endpoint (config:read)."""
        endpoint = Endpoint.objects.filter(pk=object_id).first()
        if endpoint is None:
            raise Http404("no such endpoint")
        if not self.has_view_permission(request, endpoint):
            raise PermissionDenied
        report = endpoint_health_report(endpoint_id=endpoint.pk)
        recent = latency_chart(
            [Series(row["target"].url, row["recent_points"]) for row in report],
            title="Response time, last 100 checks (failures on the baseline)",
            x_label="minutes before now",
        )
        hourly = latency_chart(
            [Series(f"{row['target'].url} p95", row["hourly_p95_points"]) for row in report]
            + [Series(f"{row['target'].url} p50", row["hourly_p50_points"]) for row in report],
            title="Response time per hour, last 7 days (p95 and p50 from the hourly roll-ups)",
            x_label="hours before now",
        )
        checked = check_plans()
        rows = [
            {
                "url": row["target"].url,
                "enabled": row["target"].enabled,
                "badge": status_badge(row["health"].status),
                "health": row["health"],
                "unknown_reason": row["unknown_reason"],
                "checked": row["target"].pk in checked,
                "windows": [
                    {
                        "label": label,
                        "checks": row["summary"][window]["checks"],
                        "uptime": _percent(row["summary"][window]["uptime"]),
                        "p50": _ms(row["summary"][window]["p50_ms"]),
                        "p95": _ms(row["summary"][window]["p95_ms"]),
                    }
                    for window, label in HEALTH_WINDOWS
                ],
            }
            for row in report
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Health of {endpoint.key}",
            "opts": self.model._meta,
            "endpoint": endpoint,
            "rows": rows,
            "recent_chart": recent,
            "hourly_chart": hourly,
            "has_active_checks": any(row["checked"] for row in rows),
        }
        return TemplateResponse(request, "admin/routing/endpoint/health.html", context)

    @admin.display(description="dashboard")
    def dashboard_link(self, endpoint: Endpoint) -> str:
        url = reverse("admin:routing_endpoint_dashboard", args=[endpoint.pk])
        return format_html('<a href="{}" class="dashboard-link">traffic</a>', url)

    @admin.display(description="key", ordering="name")
    def key(self, endpoint: Endpoint) -> str:
        return endpoint.key

    @admin.display(description="targets")
    def target_count(self, endpoint: Endpoint) -> int:
        return len(endpoint.targets.all())

    @admin.display(description="tags")
    def tag_list(self, endpoint: Endpoint) -> str:
        return ", ".join(endpoint.tags)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return self.fieldsets
        # Read-only view: the document as stored, since the form's inputs are not model fields.
        return [(None, {"fields": ["key", "is_default", "enabled", "document_json"]})]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if self.has_change_permission(request, obj) else ["key", "is_default", "enabled", "document_json"]

    @admin.display(description="document")
    def document_json(self, endpoint: Endpoint) -> str:
        return endpoint.canonical

    def save_through_service(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> Endpoint:
        data = form.document()
        targets = []
        for formset in formsets:
            for target_form in formset.forms:
                cleaned = getattr(target_form, "cleaned_data", None)
                if not cleaned or cleaned.get("DELETE") or not cleaned.get("url"):
                    continue
                targets.append({"url": cleaned["url"], "weight": cleaned["weight"], "enabled": cleaned["enabled"]})
        data["targets"] = targets
        if change:
            return services.endpoint_update(
                endpoint=form.instance, data=data, partial=False, **self.service_context(request)
            )
        return services.endpoint_create(data=data, **self.service_context(request))

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        services.endpoint_delete(endpoint=obj, **self.service_context(request))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Django's bulk delete would be one revision per endpoint; deletes go one by one instead.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Endpoint], enabled: bool) -> None:
        try:
            changed = services.endpoints_set_enabled(
                endpoints=queryset, enabled=enabled, **self.service_context(request)
            )
        except GatewayError as exc:
            self.message_user(request, describe(exc), messages.ERROR)
            return
        self.message_user(request, f"{'Enabled' if enabled else 'Disabled'} {changed} endpoint(s) in one revision.")

    @admin.action(description="Enable selected endpoints", permissions=["change"])
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected endpoints", permissions=["change"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._set_enabled(request, queryset, False)
