from __future__ import annotations

from controlplane.core.api.views import DocumentObjectViewSet

from .. import services
from ..models import BreakerPolicy
from .serializers import BreakerPolicySerializer


class BreakerPolicyViewSet(DocumentObjectViewSet):
    """Breaker policies, addressed by name. `default` always exists. Writes go through breakers.services."""

    serializer_class = BreakerPolicySerializer
    queryset = BreakerPolicy.objects.order_by("name")
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9_-]+"
    filterset_fields = ["name"]
    write_services = {
        "create": services.breaker_policy_create,
        "update": services.breaker_policy_update,
        "delete": services.breaker_policy_delete,
    }
    service_object = "policy"
