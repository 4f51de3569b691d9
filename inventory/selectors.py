from typing import Any

from inventory.read_models import StockView


def stock_view_list() -> Any:
    return StockView.objects.order_by("id")


def stock_view_get(*, sku: str) -> StockView | None:
    return StockView.objects(pk=sku).first()
