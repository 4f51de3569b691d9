from rest_framework import serializers, status
from rest_framework.permissions import BasePermission, IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import PositiveQuantityField, paginated_response
from core.exceptions import NotFound
from eventing.contract.context import get_correlation_id
from inventory.selectors import stock_view_get, stock_view_list
from inventory.services import stock_item_create, stock_item_restock


class StockOutputSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()
    available = serializers.IntegerField()


class StockItemListCreateApi(APIView):
    """Anyone signed in may read the stock view; only staff may add items."""

    class InputSerializer(serializers.Serializer):
        sku = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
        name = serializers.CharField(max_length=200)
        quantity = PositiveQuantityField()

    def get_permissions(self) -> list[BasePermission]:
        return [IsAdminUser()] if self.request.method == "POST" else [IsAuthenticated()]

    def get(self, request: Request) -> Response:
        return paginated_response(
            queryset=stock_view_list(), serializer_class=StockOutputSerializer, request=request, view=self
        )

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = stock_item_create(**serializer.validated_data)
        return Response(
            {**StockOutputSerializer(item).data, "correlation_id": get_correlation_id()}, status=status.HTTP_201_CREATED
        )


class StockItemDetailApi(APIView):
    def get(self, request: Request, sku: str) -> Response:
        view = stock_view_get(sku=sku)
        if view is None:
            raise NotFound(f"No stock item with sku {sku!r} (or it is not in the stock view yet).")
        return Response(StockOutputSerializer(view).data)


class StockItemRestockApi(APIView):
    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer):
        quantity = PositiveQuantityField()

    def post(self, request: Request, sku: str) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = stock_item_restock(sku=sku, **serializer.validated_data)
        return Response(
            {**StockOutputSerializer(item).data, "correlation_id": get_correlation_id()},
            status=status.HTTP_202_ACCEPTED,
        )
