"""Celery tasks of the breakers app; the beat schedule is in config/celery.py."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="controlplane.breakers.tasks.purge_breaker_transitions", ignore_result=True)
def purge_breaker_transitions() -> int:
    """Drop reported transitions past their retention (TRANSITION_RETENTION_DAYS). Inserts already trim the
    endpoints they touch; this catches the endpoints whose breakers have been quiet since."""
    from .services import breaker_transitions_purge

    return breaker_transitions_purge()
