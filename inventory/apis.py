from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission, IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import Pagination, PositiveQuantityField, paginated_response
from core.exceptions import NotFound
from core.openapi import PAGE_NOT_FOUND, STAFF_WRITE, UNAUTHENTICATED, LinkedResponse, bad_request, error, link
from eventing.contract.context import get_correlation_id
from inventory.models import StockItem
from inventory.selectors import stock_view_get, stock_view_list
from inventory.services import stock_item_create, stock_item_restock


class StockOutputSerializer(serializers.Serializer[Any]):
    sku = serializers.CharField()
    name = serializers.CharField(help_text="Empty until the stock view has the item's STOCK_ADDED.")
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()
    available = serializers.IntegerField()


class StockChangeOutputSerializer(StockOutputSerializer):
    """The item's counts right after a write (the stock view catches up asynchronously)."""

    correlation_id = serializers.CharField(help_text="The request's correlation id: its events in /api/events/.")


def _changed(item: StockItem) -> dict[str, Any]:
    return {**StockOutputSerializer(item).data, "correlation_id": get_correlation_id()}


# Where a client goes from a sku; each link names how the source response carries it.
def _item_links(sku: str) -> dict[str, Any]:
    return {
        "GetItem": link("stock_item_get", "The item, once it is in the stock view.", sku=sku),
        "RestockItem": link("stock_item_restock", "Add stock (staff).", sku=sku),
    }


class StockItemListCreateApi(APIView):
    """Anyone signed in may read the stock view; only staff may add items."""

    pagination_class = Pagination

    class InputSerializer(serializers.Serializer[Any]):
        sku = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
        name = serializers.CharField(max_length=200)
        quantity = PositiveQuantityField()

    def get_permissions(self) -> list[BasePermission]:
        return [IsAdminUser()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(
        operation_id="stock_items_list",
        summary="List stock items",
        description="From the stock view, by sku.",
        responses={
            200: LinkedResponse(
                StockOutputSerializer(many=True),
                "One page of the stock view.",
                links=_item_links("$response.body#/results/0/sku"),
            ),
            401: UNAUTHENTICATED,
            404: error(PAGE_NOT_FOUND),
        },
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            queryset=stock_view_list(), serializer_class=StockOutputSerializer, request=request, view=self
        )

    @extend_schema(
        operation_id="stock_item_create",
        summary="Add a stock item (staff)",
        description="The new item's counts; the stock view and the orders app learn of it asynchronously.",
        request=InputSerializer,
        responses={
            201: LinkedResponse(StockChangeOutputSerializer, "Created.", links=_item_links("$response.body#/sku")),
            400: bad_request("A field breaks a rule, or the sku exists already."),
            401: UNAUTHENTICATED,
            403: STAFF_WRITE,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = stock_item_create(**serializer.validated_data)
        return Response(_changed(item), status=status.HTTP_201_CREATED)


class StockItemDetailApi(APIView):
    @extend_schema(
        operation_id="stock_item_get",
        summary="Get a stock item",
        description="From the stock view, which the projections consumer writes shortly after each stock event.",
        responses={
            200: StockOutputSerializer,
            401: UNAUTHENTICATED,
            404: error("No such sku, or not in the stock view yet (a just-added item, for a moment)."),
        },
    )
    def get(self, request: Request, sku: str) -> Response:
        view = stock_view_get(sku=sku)
        if view is None:
            raise NotFound(f"No stock item with sku {sku!r} (or it is not in the stock view yet).")
        return Response(StockOutputSerializer(view).data)


class StockItemRestockApi(APIView):
    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer[Any]):
        quantity = PositiveQuantityField()

    @extend_schema(
        operation_id="stock_item_restock",
        summary="Add stock to an item (staff)",
        request=InputSerializer,
        responses={
            202: LinkedResponse(
                StockChangeOutputSerializer,
                "Restocked; the stock view follows asynchronously.",
                links={"GetItem": link("stock_item_get", "The item.", sku="$request.path.sku")},
            ),
            400: bad_request("The quantity is not 1 to a billion, or would take on-hand stock past a billion."),
            401: UNAUTHENTICATED,
            403: STAFF_WRITE,
            404: error("No such sku."),
        },
    )
    def post(self, request: Request, sku: str) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = stock_item_restock(sku=sku, **serializer.validated_data)
        return Response(_changed(item), status=status.HTTP_202_ACCEPTED)
