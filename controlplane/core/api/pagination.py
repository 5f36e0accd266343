from rest_framework.pagination import LimitOffsetPagination as _LimitOffsetPagination


class LimitOffsetPagination(_LimitOffsetPagination):
    """?limit=&offset=, 100 by default, never more than 1,000 a page."""

    default_limit = 100
    max_limit = 1000
