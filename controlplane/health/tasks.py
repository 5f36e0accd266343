"""Celery tasks of the health app; the beat schedule is in config/celery.py."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="controlplane.health.tasks.dispatch_health_checks", ignore_result=True)
def dispatch_health_checks() -> int:
    """Claim due targets, probe them, record the results (§7). Beat runs it every 2 s; a lost run is
    harmless: the targets it held come back when their lease runs out."""
    from .services import health_checks_run_due

    return health_checks_run_due()


@shared_task(name="controlplane.health.tasks.purge_health_history", ignore_result=True)
def purge_health_history() -> int:
    """Drop health history past its retention (~35 days)."""
    from .services import health_history_purge

    return health_history_purge()
