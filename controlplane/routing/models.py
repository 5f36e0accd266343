"""Endpoints (upstream services), their targets, and the route keys they claim (ARCHITECTURE §2, §3)."""

from django.db import models


class Endpoint(models.Model):
    """One version of an upstream service, keyed `name:version` everywhere.

    `document` is the endpoint's canonical sparse form (configdoc.normalize_endpoint) and the source
    of truth; `canonical` is its canonical JSON text. The other columns are copies kept for
    constraints, filtering and the admin, written by the services together with `document`.
    """

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=32)
    is_default = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    # §11 (format 2): the endpoint's own plugins (name -> canonical sparse config) and preserve_host.
    plugins = models.JSONField(default=dict, blank=True)
    preserve_host = models.BooleanField(default=False)
    breaker_policy = models.ForeignKey("breakers.BreakerPolicy", on_delete=models.PROTECT, related_name="endpoints")
    document = models.JSONField()
    canonical = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="routing_endpoint_unique_key"),
            # At most one default version per name; the services keep it exactly one.
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(is_default=True), name="routing_endpoint_one_default_per_name"
            ),
            models.CheckConstraint(
                condition=models.Q(name__regex=r"^[A-Za-z0-9_-]+$"), name="routing_endpoint_name_format"
            ),
            models.CheckConstraint(
                condition=models.Q(version__regex=r"^v?[0-9]+(\.[0-9]+)*$"), name="routing_endpoint_version_format"
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


class Target(models.Model):
    """An upstream base URL of an endpoint. Identity is (endpoint, url), so health survives edits."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="targets")
    url = models.CharField(max_length=2048)
    weight = models.PositiveIntegerField(default=100)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["endpoint_id", "url"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "url"], name="routing_target_unique_url"),
            models.CheckConstraint(
                condition=models.Q(weight__gte=1, weight__lte=1000), name="routing_target_weight_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.url}"


class RouteKey(models.Model):
    """A path prefix an endpoint claims. Endpoints may share one when §12's matchers (hosts,
    match_headers, methods) tell them apart: the services check that (configdoc.routes.ambiguous_pairs)
    under the config write lock, so the database keeps only one row per (key, endpoint)."""

    key = models.CharField(max_length=1100, db_index=True)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="route_keys")

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["key", "endpoint"], name="routing_routekey_unique_claim")]

    def __str__(self) -> str:
        return self.key
