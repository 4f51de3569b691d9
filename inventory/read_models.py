"""The stock view in MongoDB and its projection.

Each stock event carries the new counts of the items it touched with their
versions; the view takes a row's counts only from a newer version.
"""

from mongoengine import Document, IntField, StringField

from eventing.events import Envelope
from eventing.mongo import upsert_if_newer
from inventory.events import ItemStateData, StockAdded


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


def _apply_state(state: ItemStateData, *, facts: dict[str, str] | None = None) -> None:
    upsert_if_newer(
        StockView,
        key=state["sku"],
        version=state["version"],
        fields={
            "on_hand": state["on_hand"],
            "reserved": state["reserved"],
            "available": state["on_hand"] - state["reserved"],
        },
        facts=facts,
    )


def project_stock_added(*, event: StockAdded, envelope: Envelope) -> None:
    state: ItemStateData = {
        "sku": event.sku,
        "on_hand": event.on_hand,
        "reserved": event.reserved,
        "version": envelope.aggregate_version,
    }
    _apply_state(state, facts={"name": event.name})  # the name never changes


def project_stock_levels(*, items: list[ItemStateData]) -> None:
    for state in items:
        _apply_state(state)
