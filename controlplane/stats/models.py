"""Traffic statistics aggregated from the data planes' status reports (ARCHITECTURE §4).

Each report carries counters cumulative since the node's boot; `services.stats_ingest` turns them
into deltas against the node's previous report for the same boot (NodeCounterBaseline) and adds
them to the endpoint's current minute and hour rows. Minute rows are kept 24 h, hour rows 30 days
(`tasks.stats_prune`). The overall figures are sums over the endpoints' rows, made by the selectors.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from configdoc.reports import empty_histogram


class TrafficBucket(models.Model):
    """One endpoint's traffic in one period (a minute or an hour starting at `start`), as deltas."""

    endpoint_key = models.CharField(max_length=140, help_text="name:version")
    start = models.DateTimeField(help_text="start of the period (UTC, whole minute or hour)")
    requests_2xx = models.PositiveBigIntegerField(default=0)
    requests_3xx = models.PositiveBigIntegerField(default=0)
    requests_4xx = models.PositiveBigIntegerField(default=0)
    requests_5xx = models.PositiveBigIntegerField(default=0)
    errors = models.JSONField(default=dict, blank=True, help_text="gateway-made answers by error code")
    retries = models.PositiveBigIntegerField(default=0)
    breaker_trips = models.PositiveBigIntegerField(default=0)
    duration_buckets = models.JSONField(default=empty_histogram, help_text="16 counts, configdoc.reports buckets")
    duration_sum = models.FloatField(default=0.0, help_text="seconds")
    upstream_buckets = models.JSONField(default=empty_histogram, help_text="16 counts, per upstream try")
    upstream_sum = models.FloatField(default=0.0, help_text="seconds")

    class Meta:
        abstract = True
        ordering = ["start", "endpoint_key"]

    def __str__(self) -> str:
        return f"{self.endpoint_key} at {self.start:%Y-%m-%d %H:%M}"

    @property
    def requests(self) -> int:
        return self.requests_2xx + self.requests_3xx + self.requests_4xx + self.requests_5xx


class TrafficMinute(TrafficBucket):
    class Meta(TrafficBucket.Meta):
        constraints = [models.UniqueConstraint(fields=["endpoint_key", "start"], name="stats_minute_unique")]
        indexes = [models.Index(fields=["start"], name="stats_minute_start")]


class TrafficHour(TrafficBucket):
    class Meta(TrafficBucket.Meta):
        constraints = [models.UniqueConstraint(fields=["endpoint_key", "start"], name="stats_hour_unique")]
        indexes = [models.Index(fields=["start"], name="stats_hour_start")]


class ConsumerTrafficMinute(models.Model):
    """One consumer's answers on one endpoint in one minute, as the nodes' reports added them up
    (ARCHITECTURE §11: traffic by consumer, bounded). At most CONSUMERS_PER_MINUTE named consumers per
    endpoint and minute; the rest of that minute's traffic is the row with `consumer` "" (`other`: no
    username is empty). Kept as long as the minute rows (24 h)."""

    OTHER = ""

    endpoint_key = models.CharField(max_length=140, help_text="name:version")
    start = models.DateTimeField(help_text="start of the minute (UTC)")
    consumer = models.CharField(max_length=64, blank=True, help_text='consumer username; "" for all others')
    requests_2xx = models.PositiveBigIntegerField(default=0)
    requests_3xx = models.PositiveBigIntegerField(default=0)
    requests_4xx = models.PositiveBigIntegerField(default=0)
    requests_5xx = models.PositiveBigIntegerField(default=0)
    rate_limited = models.PositiveBigIntegerField(
        default=0, help_text="the 4xx that were the rate_limit plugin's 429 rate_limited"
    )

    class Meta:
        ordering = ["start", "endpoint_key", "consumer"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint_key", "start", "consumer"], name="stats_consumer_minute_unique")
        ]
        indexes = [models.Index(fields=["start"], name="stats_consumer_minute_start")]

    def __str__(self) -> str:
        return f"{self.consumer or 'other consumers'} on {self.endpoint_key} at {self.start:%Y-%m-%d %H:%M}"

    @property
    def requests(self) -> int:
        return self.requests_2xx + self.requests_3xx + self.requests_4xx + self.requests_5xx


class NodeCounterBaseline(models.Model):
    """The highest cumulative counters seen from one boot of one node: what the next report's deltas
    are taken against. Pruned with the minute rows once the boot has not reported for a day."""

    node_id = models.CharField(max_length=128)
    boot_id = models.CharField(max_length=128)
    counters = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    consumer_epoch = models.PositiveBigIntegerField(
        default=0, help_text="the last report epoch whose traffic by consumer was added (each is added once)"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node_id", "boot_id"], name="stats_baseline_unique")]

    def __str__(self) -> str:
        return f"counters of {self.node_id} boot {self.boot_id}"
