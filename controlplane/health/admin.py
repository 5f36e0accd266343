"""Observed target health in the admin: read-only (only probes write health), with status badges."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from controlplane.accounts.roles import CONFIG_WRITE, has_gateway_perm
from controlplane.core.actors import Actor
from controlplane.core.admin_site import RoleAdmin
from controlplane.routing.models import Endpoint

from . import services
from .models import HealthStatus, TargetHealth
from .selectors import UNKNOWN_REASON_LABELS, target_health_summary, unknown_reasons

BADGE_COLOURS = {HealthStatus.HEALTHY: "#2e7d32", HealthStatus.UNHEALTHY: "#c62828", HealthStatus.UNKNOWN: "#757575"}


def status_badge(status: str) -> str:
    colour = BADGE_COLOURS.get(HealthStatus(status), "#757575")
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px">{}</span>', colour, status
    )


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f} %"


@admin.register(TargetHealth)
class TargetHealthAdmin(RoleAdmin):
    list_display = ["target_endpoint", "target_url", "badge", "uptime_last_100", "uptime_24h", "last_checked_at"]
    list_display_links = ["target_url"]
    list_filter = ["status"]
    search_fields = ["target__url", "target__endpoint__name"]
    list_select_related = ["target__endpoint"]
    readonly_fields = (
        "target",
        "badge",
        "consecutive_successes",
        "consecutive_failures",
        "last_checked_at",
        "last_error",
        "last_latency_ms",
        "changed_at",
        "next_check_at",
        "uptime_report",
    )
    fields = readonly_fields
    actions = ["check_now"]

    @admin.display(description="endpoint", ordering="target__endpoint__name")
    def target_endpoint(self, obj: TargetHealth) -> str:
        return obj.target.endpoint.key

    @admin.display(description="url", ordering="target__url")
    def target_url(self, obj: TargetHealth) -> str:
        return obj.target.url

    @admin.display(description="status", ordering="status")
    def badge(self, obj: TargetHealth) -> str:
        if obj.status != HealthStatus.UNKNOWN:
            return status_badge(obj.status)
        reason = UNKNOWN_REASON_LABELS.get(unknown_reasons([obj.target]).get(obj.target_id, ""), "")
        return format_html('{} <span class="unknown-reason help">({})</span>', status_badge(obj.status), reason)

    @admin.display(description="uptime (last 100)")
    def uptime_last_100(self, obj: TargetHealth) -> str:
        return _percent(target_health_summary(target_id=obj.target_id)["last_100"]["uptime"])

    @admin.display(description="uptime (24 h)")
    def uptime_24h(self, obj: TargetHealth) -> str:
        return _percent(target_health_summary(target_id=obj.target_id)["24h"]["uptime"])

    @admin.display(description="uptime and latency")
    def uptime_report(self, obj: TargetHealth) -> str:
        summary = target_health_summary(target_id=obj.target_id)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    window,
                    values["checks"],
                    _percent(values["uptime"]),
                    "–" if values["p50_ms"] is None else f"{values['p50_ms']} ms",
                    "–" if values["p95_ms"] is None else f"{values['p95_ms']} ms",
                )
                for window, values in summary.items()
            ),
        )
        # A constant, no data in it.
        header = mark_safe("<tr><th>window</th><th>checks</th><th>uptime</th><th>p50</th><th>p95</th></tr>")  # noqa: S308
        return format_html("<table>{}{}</table>", header, rows)

    # Health is observed, never edited: no add, change or delete for anyone.
    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not has_gateway_perm(request.user, CONFIG_WRITE):
            actions.pop("check_now", None)
        return actions

    @admin.action(description="Check the selected targets' endpoints now")
    def check_now(self, request: HttpRequest, queryset: QuerySet[TargetHealth]) -> None:
        if not has_gateway_perm(request.user, CONFIG_WRITE):
            return
        endpoints = Endpoint.objects.filter(targets__health__in=queryset).distinct()
        for endpoint in endpoints:
            try:
                results = services.endpoint_check_now(endpoint=endpoint, actor=Actor.from_user(request.user))
            except ValueError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            failed = [plan.url for plan, result in results if not result.ok]
            self.message_user(request, f"{endpoint.key}: {len(results)} checked, {len(failed)} failed", messages.INFO)
