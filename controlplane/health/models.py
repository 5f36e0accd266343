"""Observed health of targets (ARCHITECTURE §7): operational state, audited, never revisioned.

Admin state (`Target.enabled`) lives in routing and is never written here; health is never written there.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

# Upper bounds, in milliseconds, of the fixed latency buckets of HealthRollup.latency_buckets; the
# last bucket (index len(LATENCY_BUCKETS_MS)) counts everything above the last bound. Fixed, so hourly
# buckets merge by adding counts and p50/p95 over 24 h / 7 d / 30 d stay correct. Never reorder or
# change them without migrating the stored counts.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
)  # fmt: skip


class HealthStatus(models.TextChoices):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


# Badge colours of the admin, by status.
BADGE_COLOURS_BY_STATUS = {
    HealthStatus.HEALTHY: "#2e7d32",
    HealthStatus.UNHEALTHY: "#c62828",
    HealthStatus.UNKNOWN: "#757575",
}


class TargetHealth(models.Model):
    """One target's current health, its hysteresis counters and its place in the check schedule.

    The dispatcher claims a row by setting `lease_until` and `next_check_at` in one statement, so a
    row is probed by one worker per interval; a crashed worker's lease simply runs out.
    """

    target = models.OneToOneField("routing.Target", on_delete=models.CASCADE, related_name="health")
    status = models.CharField(max_length=16, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN)
    consecutive_successes = models.PositiveIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="", help_text="e.g. HTTP 500, timeout")
    last_latency_ms = models.FloatField(null=True, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True, help_text="when `status` last changed")
    next_check_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        verbose_name_plural = "target health"
        indexes = [models.Index(fields=["next_check_at"], name="health_th_next_check_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=HealthStatus.values), name="health_targethealth_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target} {self.status}"


class HealthResult(models.Model):
    """One probe's outcome. Only the last RESULTS_KEPT per target are kept (trimmed on write)."""

    target = models.ForeignKey("routing.Target", on_delete=models.CASCADE, related_name="health_results")
    checked_at = models.DateTimeField()
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True, help_text="to the response head; empty without one")
    reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target", "-id"], name="health_result_target_idx")]

    def __str__(self) -> str:
        return f"{self.target_id} {'ok' if self.ok else self.reason} at {self.checked_at:%Y-%m-%d %H:%M:%S}"


class HealthRollup(models.Model):
    """Per target per hour: probe counts and a latency histogram over LATENCY_BUCKETS_MS (counts, not
    cumulative; len(LATENCY_BUCKETS_MS) + 1 entries). Kept ~35 days (tasks.purge_health_history)."""

    target = models.ForeignKey("routing.Target", on_delete=models.CASCADE, related_name="health_rollups")
    hour = models.DateTimeField(help_text="start of the hour, UTC")
    checks = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    latency_buckets = models.JSONField(default=list)

    class Meta:
        ordering = ["target_id", "hour"]
        constraints = [models.UniqueConstraint(fields=["target", "hour"], name="health_rollup_unique_hour")]
        indexes = [models.Index(fields=["hour"], name="health_rollup_hour_idx")]

    def __str__(self) -> str:
        return f"{self.target_id} {self.hour:%Y-%m-%d %H}:00 {self.checks} checks"
