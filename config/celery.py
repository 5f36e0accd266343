"""The Celery app of the control plane (ARCHITECTURE §7, §10): `celery -A config worker` / `celery -A config beat`.

Settings come from Django's, namespace CELERY (config/settings/base.py, "Celery" section). The beat
schedule lives here and only here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

FILESYSTEM_FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_state_folders(sender: Celery, source: Any, **kwargs: Any) -> None:
    """kombu's filesystem transport and beat's schedule file need their folders before first use
    (embedded setup: GATEWAY_VAR_DIR/celery)."""
    folders = [(source.get("broker_transport_options") or {}).get(key) for key in FILESYSTEM_FOLDERS]
    schedule = source.get("beat_schedule_filename")
    for folder in [*folders, Path(schedule).parent if schedule else None]:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)


# Tracing (docs/tracing.md), when GATEWAY_OTLP_ENDPOINT is set: one provider per process, made in the process
# that exports. A prefork pool's children are forked after worker_init, so they set up on worker_process_init
# (an exporter thread does not survive a fork); the solo and threads pools run tasks in the worker itself.


def _tracing_setup(role: str) -> None:
    from controlplane.core import tracing

    tracing.setup(role)


@signals.worker_init.connect(weak=False)
def _worker_tracing(sender: Any, **kwargs: Any) -> None:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    pool = get_implementation(sender.pool_cls)
    if not (isinstance(pool, type) and issubclass(pool, TaskPool)):
        _tracing_setup("worker")


@signals.worker_process_init.connect(weak=False)
def _worker_process_tracing(**kwargs: Any) -> None:
    _tracing_setup("worker")  # idempotent: the solo pool sends this in the worker process too


@signals.beat_init.connect(weak=False)
def _beat_tracing(sender: Any, **kwargs: Any) -> None:
    _tracing_setup("beat")


# The whole beat schedule. Each interval is part of the design, so each says why.
app.conf.beat_schedule = {
    # §7: "Beat ticks a dispatcher every 2 s". The dispatcher only claims targets whose next_check_at is
    # due, so the tick bounds scheduling lag, not the probe rate; a duplicate beat is harmless (leases).
    "health-dispatch": {
        "task": "controlplane.health.tasks.dispatch_health_checks",
        "schedule": 2.0,
        "options": {"expires": 10},
    },
    # §7: hourly roll-ups and results are kept ~35 days; once an hour keeps the tables bounded.
    "health-retention": {
        "task": "controlplane.health.tasks.purge_health_history",
        "schedule": 3600.0,
    },
    # Traffic minute rows are kept 24 h, hour rows 30 days; every 10 minutes keeps the minute
    # table within ~24 h + 10 min of rows, in batches (controlplane/stats/services.py).
    "stats-retention": {
        "task": "controlplane.stats.tasks.prune_traffic_stats",
        "schedule": 600.0,
    },
    # Nodes silent for GATEWAY_NODE_PURGE_SECONDS (default 7 days) are deleted; hourly is plenty
    # against a bound measured in days, and the delete is one indexed query on last_seen.
    "dataplane-node-purge": {
        "task": "controlplane.dataplanes.tasks.purge_silent_nodes",
        "schedule": 3600.0,
    },
    # Reported breaker transitions are kept 30 days (and at most 1,000 per endpoint, trimmed on
    # insert); hourly is plenty against a bound in days, and the delete is one query.
    "breaker-transitions-retention": {
        "task": "controlplane.breakers.tasks.purge_breaker_transitions",
        "schedule": 3600.0,
    },
}
