"""Celery tasks of the dataplanes app (scheduled in config/celery.py)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="controlplane.dataplanes.tasks.purge_silent_nodes", ignore_result=True)
def purge_silent_nodes() -> int:
    """Delete the nodes that have not reported for GATEWAY_NODE_PURGE_SECONDS."""
    from .services import nodes_purge_silent

    return nodes_purge_silent()
