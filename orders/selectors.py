from mongoengine.queryset import QuerySet

from eventing.readside.projections import view_objects
from orders.read_models import CustomerOrder, OrderView


def order_view_get(*, order_id: str) -> OrderView | None:
    view: OrderView | None = view_objects(OrderView)(pk=order_id).first()
    return view


def customer_order_list(*, customer_id: str) -> QuerySet:
    return view_objects(CustomerOrder)(customer_id=customer_id).order_by("-placed_at", "-id")
