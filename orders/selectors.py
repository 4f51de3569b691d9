from typing import Any

from orders.read_models import CustomerOrder, OrderView


def order_view_get(*, order_id: str) -> OrderView | None:
    return OrderView.objects(pk=order_id).first()


def customer_order_list(*, customer_id: str) -> Any:
    return CustomerOrder.objects(customer_id=customer_id).order_by("-placed_at", "-id")
