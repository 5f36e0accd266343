"""Data-plane tokens and the nodes' reported status (ARCHITECTURE §2, §4)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class DataPlaneToken(models.Model):
    """A data plane's credential: `gwdp_…`, stored only as its sha256, bound to a service user.

    The secret is shown once when issued and never stored; `prefix` (the secret's first characters)
    finds the row, and the hash is compared in constant time. Revoking deletes the row and its user.
    """

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=16, db_index=True)
    secret_sha256 = models.CharField(max_length=64, unique=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dataplane_token")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"data-plane token {self.name} ({self.prefix}…)"


class DataPlaneNode(models.Model):
    """The last status a data-plane node reported (POST /api/v1/dataplane/status)."""

    class Result(models.TextChoices):
        APPLIED = "applied", "applied"
        REJECTED = "rejected", "rejected"

    node_id = models.CharField(max_length=128, unique=True)
    # The name of the data-plane token the node's latest report came with (a name, not a link: revoking
    # the token must not erase which credential a node used, and a name is all an operator needs).
    token_name = models.CharField(max_length=100, blank=True, help_text="the data-plane token it reports with")
    boot_id = models.CharField(max_length=128)
    hostname = models.CharField(max_length=255)
    version = models.CharField(max_length=64, help_text="the data plane's software version")
    revision = models.PositiveBigIntegerField(null=True, blank=True, help_text="the config revision it runs")
    config_sha256 = models.CharField(max_length=64, blank=True)
    state_seq = models.PositiveBigIntegerField(null=True, blank=True)
    result = models.CharField(max_length=16, choices=Result.choices)
    error = models.TextField(blank=True)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    breakers = models.JSONField(default=dict, blank=True)
    counters = models.JSONField(default=dict, blank=True)
    # The TLS listener's certificates (§13): [{name, names, not_after}], empty for a node without one.
    certificates = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["node_id"]

    def __str__(self) -> str:
        return f"node {self.node_id}"
