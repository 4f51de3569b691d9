from typing import Any

from django.urls import reverse
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import PositiveQuantityField, paginated_response
from core.exceptions import InvalidInput, NotFound
from eventing.contract.context import get_correlation_id
from orders.selectors import customer_order_list, order_view_get
from orders.services import MAX_LINES, OrderLineIn, customer_scope, order_cancel, order_place


def _required_customer(request: Request, customer_id: str | None) -> str:
    scope = customer_scope(user=request.user, customer_id=customer_id)
    if scope is None:
        raise InvalidInput({"customer_id": ["Staff must name the customer they act for."]})
    return scope


class OrderListCreateApi(APIView):
    """A customer places and lists their own orders; staff name the customer they act for."""

    class InputSerializer(serializers.Serializer):
        class LineSerializer(serializers.Serializer):
            sku = serializers.CharField(max_length=64)
            quantity = PositiveQuantityField()

        customer_id = serializers.CharField(
            max_length=64, required=False, help_text="Staff: the customer ordering. A customer may leave it out."
        )
        lines = LineSerializer(many=True, allow_empty=False, max_length=MAX_LINES)  # type: ignore[call-arg]  # ListSerializer takes it

    class FilterSerializer(serializers.Serializer):
        customer_id = serializers.CharField(
            max_length=64, required=False, help_text="Staff: whose orders. A customer gets their own."
        )

    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField()
        customer_id = serializers.CharField()
        status = serializers.CharField()
        placed_at = serializers.DateTimeField()
        line_count = serializers.IntegerField()
        total_quantity = serializers.IntegerField()

    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        customer_id = _required_customer(request, filters.validated_data.get("customer_id"))
        return paginated_response(
            queryset=customer_order_list(customer_id=customer_id),
            serializer_class=self.OutputSerializer,
            request=request,
            view=self,
        )

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        order = order_place(
            channel="api",
            customer_id=_required_customer(request, data.get("customer_id")),
            lines=[OrderLineIn(sku=line["sku"], quantity=line["quantity"]) for line in data["lines"]],
        )
        location = reverse("orders:detail", kwargs={"order_id": order.id})
        return Response(
            {"id": str(order.id), "status": order.status, "correlation_id": get_correlation_id()},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": request.build_absolute_uri(location)},
        )


class OrderDetailApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class HistorySerializer(serializers.Serializer):
            status = serializers.CharField()
            at = serializers.DateTimeField()
            version = serializers.IntegerField()

        id = serializers.CharField()
        customer_id = serializers.CharField()
        status = serializers.CharField()
        lines = serializers.ListField(child=serializers.DictField())
        reason = serializers.CharField()
        placed_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()
        history = HistorySerializer(source="sorted_history", many=True)
        version = serializers.IntegerField()

    def get(self, request: Request, order_id: str) -> Response:
        view = order_view_get(order_id=str(order_id), customer_id=customer_scope(user=request.user))
        if view is None:
            raise NotFound(f"Order {order_id} does not exist (or is not in the order view yet).")
        return Response(self.OutputSerializer(view).data)


class OrderCancelApi(APIView):
    def post(self, request: Request, order_id: str, **kwargs: Any) -> Response:
        order = order_cancel(order_id=str(order_id), customer_id=customer_scope(user=request.user))
        return Response(
            {"id": str(order.id), "status": order.status, "correlation_id": get_correlation_id()},
            status=status.HTTP_202_ACCEPTED,
        )
