"""WSGI entry point (the ASGI one, config.asgi, is what the gateway runs)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Tracing (docs/tracing.md), when GATEWAY_OTLP_ENDPOINT is set: before the handler loads the middleware.
from controlplane.core import tracing  # noqa: E402 - after DJANGO_SETTINGS_MODULE

tracing.setup("web", instrument_django=True)

application = get_wsgi_application()
