"""Top-level URLs: the admin, the API under /api/v1/, probes and metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from controlplane.core.views import healthz, readyz
from controlplane.dataplanes import metrics as gateway_metrics

# gateway_cp_* gauges on /metrics, computed at scrape time (ARCHITECTURE §9); registered once per process.
gateway_metrics.register()

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_router")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("", include("django_prometheus.urls")),
]
