from django.db.models import QuerySet

from .models import Consumer


def consumer_list() -> QuerySet[Consumer]:
    return Consumer.objects.order_by("username")
