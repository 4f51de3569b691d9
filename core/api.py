"""API plumbing shared by the apps' views."""

from typing import Any

from django.core.paginator import Paginator
from django.utils.functional import cached_property
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.limits import MAX_QUANTITY


class PositiveQuantityField(serializers.IntegerField):
    """A JSON integer from 1 to MAX_QUANTITY: no strings, floats or booleans."""

    default_error_messages = {"invalid": "Must be a positive integer.", "min_value": "Must be a positive integer."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_QUANTITY)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class CountingPaginator(Paginator):  # type: ignore[type-arg]  # pages Django and mongoengine query sets alike
    """Counts with the query set's own count(): mongoengine would otherwise load every row for len()."""

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, list | tuple):
            return len(self.object_list)
        return int(self.object_list.count())  # type: ignore[attr-defined]


class Pagination(PageNumberPagination):
    django_paginator_class = CountingPaginator
    page_size_query_param = "page_size"
    max_page_size = 500


def paginated_response(
    *, queryset: Any, serializer_class: type[serializers.Serializer[Any]], request: Request, view: APIView
) -> Response:
    """One page of ``queryset``, serialized, with count and next/previous links, paged by the view's
    ``pagination_class`` (which also tells the OpenAPI schema that the view pages)."""
    paginator: Pagination = getattr(view, "pagination_class", Pagination)()
    page: list[Any] | None = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
