from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination as _LimitOffsetPagination
from rest_framework.request import Request

# PostgreSQL's OFFSET is a bigint; nobody pages this far, so the bound stays well inside it.
MAX_OFFSET = 2**31 - 1


class LimitOffsetPagination(_LimitOffsetPagination):
    """?limit=&offset=, 100 by default, never more than 1,000 a page (a larger limit is cut to 1,000).

    DRF falls back to the defaults on a value it cannot read (`?limit=abc` silently gives 100 rows);
    here a value that is not a whole number in range is a 400 naming the parameter. An empty value is
    no value, as for every query parameter of this API.
    """

    default_limit = 100
    max_limit = 1000

    def get_limit(self, request: Request) -> int | None:
        raw = _digits(request, self.limit_query_param, "must be a whole number, at least 1")
        if raw is None:
            return self.default_limit
        # Compared as text first: a thousand-digit limit is only cut to the page size, never parsed.
        limit = self.max_limit if len(raw) > len(str(self.max_limit)) else int(raw)
        if limit < 1:
            raise ValidationError({self.limit_query_param: ["must be a whole number, at least 1"]})
        return min(limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        message = f"must be a whole number from 0 to {MAX_OFFSET}"
        raw = _digits(request, self.offset_query_param, message)
        if raw is None:
            return 0
        if len(raw) > len(str(MAX_OFFSET)) or int(raw) > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: [message]})
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = f"rows per page, default {self.default_limit}, at most {self.max_limit}"
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update(minimum=0, maximum=MAX_OFFSET)
        return parameters


def _digits(request: Request, name: str, message: str) -> str | None:
    """The parameter's value when it is ASCII digits (int() would also take "٣", " 7" and "1_0"),
    None when absent or empty, else a 400 naming it."""
    raw = str(request.query_params.get(name, ""))
    if raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise ValidationError({name: [message]})
    return raw
