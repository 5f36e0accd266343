"""Breaker policies: named, reusable circuit-breaker settings (ARCHITECTURE §3, §6)."""

from django.db import models


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
