"""Query-parameter parsing shared by the views: flags read strictly, and described as they are read.

A flag is one of FLAG_VALUES; anything else is a 400 naming the parameter (DRF's and django-filter's
boolean readers silently treat an unknown word as "not given"). An empty value is no value, as for
every query parameter of this API.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django_filters.constants import EMPTY_VALUES
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

FLAG_TRUE = ("1", "true", "yes", "on")
FLAG_FALSE = ("0", "false", "no", "off")
FLAG_VALUES = FLAG_TRUE + FLAG_FALSE
_FLAG_MESSAGE = f"must be one of {', '.join(FLAG_VALUES)}"


def query_flag(request: Request, name: str) -> bool:
    raw = str(request.query_params.get(name, ""))
    if raw == "":
        return False
    if raw not in FLAG_VALUES:
        raise ValidationError({name: [_FLAG_MESSAGE]})
    return raw in FLAG_TRUE


def flag_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, str, enum=list(FLAG_VALUES), description=f"{description} (default false)")


# The schema's type too: the choices are words, not JSON booleans (drf-spectacular would take the model's).
@extend_schema_field({"type": "string", "enum": list(FLAG_VALUES)})
class FlagFilter(django_filters.ChoiceFilter):
    """A yes/no filter that refuses words it does not know (400), unlike django-filter's BooleanFilter."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[(value, value) for value in FLAG_VALUES], **kwargs)

    def filter(self, qs: QuerySet[Any], value: str) -> QuerySet[Any]:
        if value in EMPTY_VALUES:
            return qs
        return django_filters.Filter.filter(self, qs, value in FLAG_TRUE)
