"""ASGI entry point: `uvicorn config.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Tracing (docs/tracing.md), when GATEWAY_OTLP_ENDPOINT is set: before Django's handler loads the
# middleware, so the Django instrumentation's is first. Needs only the settings, not the apps.
from controlplane.core import tracing  # noqa: E402 - after DJANGO_SETTINGS_MODULE

tracing.setup("web", instrument_django=True)

django_application = get_asgi_application()

# The data-plane sync API (GET /api/v1/dataplane/config, POST /api/v1/dataplane/status) is answered
# before Django, so a waiting long-poll holds no thread and no database connection (ARCHITECTURE §4).
# So is `GET /api/v1/revisions/{n}/wait/`, which waits for the nodes to apply a revision.
from controlplane.dataplanes.rollout import RolloutWaitApp  # noqa: E402 - needs the apps loaded
from controlplane.dataplanes.sync import DataPlaneSyncApp  # noqa: E402 - needs the apps loaded

# The ETag watcher and snapshot builds on a thread of their own, so status reports cannot delay a change.
# django-stubs types Django's ASGI handler with a dict scope and read-only messages: the same protocol.
application = DataPlaneSyncApp(RolloutWaitApp(django_application), own_watcher_thread=True)  # type: ignore[arg-type]
