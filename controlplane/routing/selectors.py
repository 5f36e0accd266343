from django.db.models import QuerySet

from .models import Endpoint


def endpoint_list() -> QuerySet[Endpoint]:
    return Endpoint.objects.select_related("breaker_policy").order_by("name", "version")
