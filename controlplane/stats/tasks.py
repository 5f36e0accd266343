"""Celery tasks of the stats app; the beat schedule is in config/celery.py."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="controlplane.stats.tasks.prune_traffic_stats", ignore_result=True)
def prune_traffic_stats() -> dict[str, int]:
    """Drop minute rows past 24 h, hour rows past 30 days and silent boots' baselines (bounded tables)."""
    from .services import stats_prune

    return stats_prune()
