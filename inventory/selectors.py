from typing import Any

from eventing.readside.projections import view_objects
from inventory.read_models import StockView


def stock_view_list() -> Any:
    return view_objects(StockView).order_by("id")


def stock_view_get(*, sku: str) -> StockView | None:
    return view_objects(StockView)(pk=sku).first()
