"""Breaker policies: named, reusable circuit-breaker settings (ARCHITECTURE §3, §6); the operators' overrides
and the transitions the nodes report (operational state, §2)."""

from datetime import datetime

from django.db import models
from django.utils import timezone


class BreakerPolicy(models.Model):
    """A named breaker policy. `default` always exists and cannot be deleted.

    `document` is the policy's canonical sparse form (configdoc.normalize_breaker_policy) and
    `canonical` its canonical JSON text, kept so the whole document is joined, not re-serialised.
    """

    name = models.CharField(max_length=100, unique=True)
    document = models.JSONField()
    canonical = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "breaker policies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(name__regex=r"^[A-Za-z0-9_-]+$"), name="breakers_policy_name_format"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ForcedState(models.TextChoices):
    OPEN = "open", "open"
    CLOSED = "closed", "closed"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "closed"
    OPEN = "open", "open"
    HALF_OPEN = "half_open", "half-open"


class BreakerOverride(models.Model):
    """An operator's override of one endpoint's breaker on every node (ARCHITECTURE §6): operational
    state, so audited and carried in the snapshot's `state.breakers`, never in a config revision.

    `force` holds until `until` (None: until lifted); an expired force is simply ignored, nothing needs
    to clear it. `reset_generation` only grows: a node closes its breaker once each time it sees it grow.
    """

    endpoint = models.OneToOneField("routing.Endpoint", on_delete=models.CASCADE, related_name="breaker_override")
    force = models.CharField(
        max_length=8, choices=ForcedState.choices, blank=True, default="", help_text="empty: not forced"
    )
    until = models.DateTimeField(null=True, blank=True, help_text="when the force ends; empty: until lifted")
    reset_generation = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.CharField(max_length=200, blank=True, help_text="the actor of the last change")

    class Meta:
        ordering = ["endpoint__name", "endpoint__version"]
        # The admin shows this model as the fleet's breakers page (every endpoint, not only overridden ones).
        verbose_name = "breaker"
        verbose_name_plural = "breakers"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(until__isnull=True) | ~models.Q(force=""),
                name="breakers_override_until_needs_force",
            ),
        ]

    def __str__(self) -> str:
        return f"breaker override of {self.endpoint}"

    def active_force(self, now: datetime) -> str | None:
        """The force in effect at `now` (None when lifted or expired)."""
        if not self.force or (self.until is not None and self.until <= now):
            return None
        return self.force


class BreakerTransition(models.Model):
    """One breaker state change a node reported (`breakers[key].transitions` of §4), kept for the fleet view.

    A node repeats its boot's transitions in every report; the unique constraint makes storing the
    same report twice add nothing. Bounded: services keep at most TRANSITIONS_KEPT per endpoint and
    TRANSITION_RETENTION_DAYS of history.
    """

    endpoint = models.ForeignKey("routing.Endpoint", on_delete=models.CASCADE, related_name="breaker_transitions")
    node_id = models.CharField(max_length=128)
    boot_id = models.CharField(max_length=128)
    from_state = models.CharField(max_length=16, choices=BreakerState.choices)
    to_state = models.CharField(max_length=16, choices=BreakerState.choices)
    at = models.DateTimeField(help_text="when the node made the transition (its wall clock)")
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "node_id", "boot_id", "at", "to_state"], name="breakers_transition_once"
            ),
        ]
        indexes = [models.Index(fields=["endpoint", "-at"], name="breakers_transition_recent_idx")]

    def __str__(self) -> str:
        return f"{self.endpoint} on {self.node_id}: {self.from_state} → {self.to_state}"
