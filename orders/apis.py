from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from core.api import Pagination, PositiveQuantityField, paginated_response
from core.exceptions import InvalidInput, NotFound
from core.openapi import (
    CSRF_ONLY,
    NO_CUSTOMER_ID,
    PAGE_NOT_FOUND,
    UNAUTHENTICATED,
    LinkedResponse,
    bad_request,
    error,
    link,
)
from eventing.contract.context import get_correlation_id
from orders.models import Order
from orders.selectors import customer_order_list, order_view_get
from orders.services import (
    MAX_LINES,
    OrderLineIn,
    customer_scope,
    order_cancel,
    order_line_sku_errors,
    order_place,
)

# The view is written by the projections consumer once the order's events arrive: until then, and for
# another customer's order, a read is a 404.
NOT_IN_VIEW = "No such order, another customer's, or not in the order view yet (a just-placed order, for a moment)."
ANOTHER_CUSTOMER = "A customer named another customer's id."
NON_FIELD_ERRORS = api_settings.NON_FIELD_ERRORS_KEY


def _required_customer(request: Request, customer_id: str | None) -> str:
    scope = customer_scope(user=request.user, customer_id=customer_id)
    if scope is None:
        raise InvalidInput({"customer_id": ["Staff must name the customer they act for."]})
    return scope


class OrderAcceptedSerializer(serializers.Serializer[Any]):
    """A write the order accepted; the views catch up with it asynchronously."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Order.Status.choices)
    correlation_id = serializers.CharField(help_text="The request's correlation id: its events in /api/events/.")


def _accepted(order: Order) -> dict[str, Any]:
    return OrderAcceptedSerializer(
        {"id": order.id, "status": order.status, "correlation_id": get_correlation_id()}
    ).data


def _with_catalogue_errors(serializer: serializers.Serializer[Any]) -> dict[str, Any]:
    """The order's input ``serializer``'s errors, and the catalogue's for every line whose sku it found no fault
    with (an unknown sku, one on two lines): one answer names every fault, where the service would check the
    catalogue only once the serializer had none to report."""
    errors, data = serializer.errors, serializer.initial_data
    lines = data.get("lines") if isinstance(data, Mapping) else None
    line_errors = errors.get("lines", {})
    if not isinstance(lines, list) or not isinstance(line_errors, dict) or NON_FIELD_ERRORS in line_errors:
        return errors  # no list of lines to check: missing, not a list, empty or too long
    sku = OrderListCreateApi.InputSerializer.LineSerializer().fields["sku"]
    skus = {
        index: sku.run_validation(line["sku"])
        for index, line in enumerate(lines)
        if isinstance(line, dict) and not line_errors.get(index, {}).keys() & {"sku", NON_FIELD_ERRORS}
    }
    found = order_line_sku_errors(skus=skus)
    if not found:
        return errors
    merged = {**line_errors, **{index: {"sku": found[index], **line_errors.get(index, {})} for index in found}}
    return {**errors, "lines": dict(sorted(merged.items()))}


# Where a client goes from an order id; each link names how the source response carries it.
def _order_links(order_id: str) -> dict[str, Any]:
    return {
        "GetOrder": link("order_get", "The order, once it is in the order view.", order_id=order_id),
        "CancelOrder": link("order_cancel", "Cancel the order.", order_id=order_id),
        "OrderEvents": link("events_list", "The order's logged events (staff).", aggregate_id=order_id),
    }


class OrderListCreateApi(APIView):
    """A customer places and lists their own orders; staff name the customer they act for."""

    pagination_class = Pagination

    class InputSerializer(serializers.Serializer[Any]):
        class LineSerializer(serializers.Serializer[Any]):
            sku = serializers.CharField(max_length=64)
            quantity = PositiveQuantityField()

        customer_id = serializers.CharField(
            max_length=64, required=False, help_text="Staff: the customer ordering. A customer may leave it out."
        )
        lines = LineSerializer(many=True, allow_empty=False, max_length=MAX_LINES)  # type: ignore[call-arg]  # ListSerializer takes it

    class FilterSerializer(serializers.Serializer[Any]):
        customer_id = serializers.CharField(
            max_length=64, required=False, help_text="Staff: whose orders. A customer gets their own."
        )

    class OutputSerializer(serializers.Serializer[Any]):
        id = serializers.UUIDField()
        customer_id = serializers.CharField()
        status = serializers.ChoiceField(choices=Order.Status.choices)
        placed_at = serializers.DateTimeField()
        line_count = serializers.IntegerField()
        total_quantity = serializers.IntegerField()

    @extend_schema(
        operation_id="orders_list",
        summary="List a customer's orders",
        description="Newest first, from the customer's order listing (a view: an order shows up once projected).",
        parameters=[FilterSerializer],
        responses={
            200: LinkedResponse(
                OutputSerializer(many=True),
                "One page of the customer's orders.",
                links=_order_links("$response.body#/results/0/id"),
            ),
            400: bad_request("Staff named no customer_id, or it is too long."),
            401: UNAUTHENTICATED,
            404: error(f"{ANOTHER_CUSTOMER} Or {PAGE_NOT_FOUND}"),
            409: NO_CUSTOMER_ID,
        },
    )
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

    @extend_schema(
        operation_id="orders_place",
        summary="Place an order",
        description=(
            f"Accepted as PENDING; the inventory then confirms or rejects it asynchronously. 1 to {MAX_LINES} lines, "
            "one per sku, each of a known sku."
        ),
        request=InputSerializer,
        responses={
            202: LinkedResponse(
                OrderAcceptedSerializer,
                "Accepted: the order is PENDING.",
                links=_order_links("$response.body#/id"),
            ),
            400: bad_request(
                "Fields break rules (an unknown sku, a sku twice, a quantity out of range, …): every fault at once."
            ),
            401: UNAUTHENTICATED,
            403: CSRF_ONLY,
            404: error(ANOTHER_CUSTOMER),
            409: NO_CUSTOMER_ID,
        },
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                required=True,
                response=[202],
                description="The order's URL.",
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        if not serializer.is_valid():
            raise serializers.ValidationError(_with_catalogue_errors(serializer))
        data = serializer.validated_data
        order = order_place(
            channel="api",
            customer_id=_required_customer(request, data.get("customer_id")),
            lines=[OrderLineIn(sku=line["sku"], quantity=line["quantity"]) for line in data["lines"]],
        )
        location = reverse("orders:detail", kwargs={"order_id": order.id})
        return Response(
            _accepted(order),
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": request.build_absolute_uri(location)},
        )


class OrderDetailApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        class LineSerializer(serializers.Serializer[Any]):
            sku = serializers.CharField()
            quantity = serializers.IntegerField()

        class HistorySerializer(serializers.Serializer[Any]):
            status = serializers.ChoiceField(choices=Order.Status.choices)
            at = serializers.DateTimeField()
            version = serializers.IntegerField()

        id = serializers.UUIDField()
        customer_id = serializers.CharField()
        status = serializers.ChoiceField(choices=Order.Status.choices)
        lines = LineSerializer(many=True, help_text="Empty until the view has the order's ORDER_CREATED.")
        reason = serializers.CharField(help_text="Why it was rejected or cancelled; empty otherwise.")
        placed_at = serializers.DateTimeField(
            allow_null=True, help_text="Null until the view has the order's ORDER_CREATED (events may overtake it)."
        )
        updated_at = serializers.DateTimeField()
        history = HistorySerializer(source="sorted_history", many=True)
        version = serializers.IntegerField()

    @extend_schema(
        operation_id="order_get",
        summary="Get an order",
        description="From the order view, which the projections consumer writes shortly after each of its events.",
        responses={
            200: OutputSerializer,
            401: UNAUTHENTICATED,
            404: error(NOT_IN_VIEW),
            409: NO_CUSTOMER_ID,
        },
    )
    def get(self, request: Request, order_id: str) -> Response:
        view = order_view_get(order_id=str(order_id), customer_id=customer_scope(user=request.user))
        if view is None:
            raise NotFound(f"Order {order_id} does not exist (or is not in the order view yet).")
        return Response(self.OutputSerializer(view).data)


class OrderCancelApi(APIView):
    @extend_schema(
        operation_id="order_cancel",
        summary="Cancel an order",
        description="A PENDING or CONFIRMED order is cancelled at once; the inventory releases its stock afterwards.",
        request=None,
        responses={
            202: LinkedResponse(
                OrderAcceptedSerializer,
                "Cancelled: the order is CANCELLED.",
                links={"GetOrder": link("order_get", "The order.", order_id="$request.path.order_id")},
            ),
            401: UNAUTHENTICATED,
            403: CSRF_ONLY,
            404: error("No such order, or another customer's."),
            409: error("The order is REJECTED or CANCELLED already. Or: " + NO_CUSTOMER_ID.description),
        },
    )
    def post(self, request: Request, order_id: str, **kwargs: Any) -> Response:
        order = order_cancel(order_id=str(order_id), customer_id=customer_scope(user=request.user))
        return Response(_accepted(order), status=status.HTTP_202_ACCEPTED)
