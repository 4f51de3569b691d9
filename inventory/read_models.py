"""The stock view in MongoDB and its projection.

Each stock event carries the new counts of the items it touched with their
versions; the view takes a row's counts only from a newer version.
"""

from typing import Any

from mongoengine import Document, IntField, StringField

from eventing.contract.envelope import Envelope
from eventing.readside.mongo import RowChange
from eventing.readside.projections import Changes, Projection, register
from inventory.events import ItemStateData, StockAdded, StockReleased, StockReserved


class StockView(Document):
    id = StringField(primary_key=True)  # the sku
    name = StringField(default="")
    on_hand = IntField(default=0)
    reserved = IntField(default=0)
    available = IntField(default=0)
    version = IntField(default=0)

    meta = {"collection": "stock_view"}

    @property
    def sku(self) -> str:
        return self.id


def _levels(state: ItemStateData, *, facts: dict[str, str] | None = None) -> tuple[type[Document], RowChange]:
    return (
        StockView,
        RowChange(
            key=state["sku"],
            version=state["version"],
            fields={
                "on_hand": state["on_hand"],
                "reserved": state["reserved"],
                "available": state["on_hand"] - state["reserved"],
            },
            facts=facts or {},
        ),
    )


def stock_view_changes(event: StockAdded | StockReserved | StockReleased, envelope: Envelope) -> Changes:
    if isinstance(event, StockAdded):
        state: ItemStateData = {
            "sku": event.sku,
            "on_hand": event.on_hand,
            "reserved": event.reserved,
            "version": envelope.aggregate_version,
        }
        return [_levels(state, facts={"name": event.name})]  # the name never changes
    return [_levels(state) for state in event.items]


def _expected_from_database() -> dict[type[Document], dict[str, dict[str, Any]]]:
    from inventory.models import StockItem

    return {
        StockView: {
            item.sku: {
                "name": item.name,
                "on_hand": item.on_hand,
                "reserved": item.reserved,
                "available": item.available,
                "version": item.version,
            }
            for item in StockItem.objects.all()
        }
    }


stock_views = register(
    Projection(
        name="stock",
        documents=(StockView,),
        events=(StockAdded, StockReserved, StockReleased),
        changes=stock_view_changes,
        expected_from_database=_expected_from_database,
    )
)
