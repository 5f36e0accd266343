"""The Celery app of the control plane (ARCHITECTURE §7, §10): `celery -A config worker` / `celery -A config beat`.

Settings come from Django's, namespace CELERY (config/settings/base.py, "Celery" section). The beat
schedule lives here and only here.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.beat_init.connect
def _make_filesystem_broker_folders(sender: object = None, **kwargs: object) -> None:
    """kombu's filesystem transport needs its folders to exist before the first message."""
    for key in ("data_folder_in", "data_folder_out", "processed_folder"):
        folder = (app.conf.broker_transport_options or {}).get(key)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)


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
}
