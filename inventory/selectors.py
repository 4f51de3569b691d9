from mongoengine.queryset import QuerySet

from eventing.readside.projections import view_objects
from inventory.read_models import StockView


def stock_view_list() -> QuerySet:
    return view_objects(StockView).order_by("id")


def stock_view_get(*, sku: str) -> StockView | None:
    view: StockView | None = view_objects(StockView)(pk=sku).first()
    return view
