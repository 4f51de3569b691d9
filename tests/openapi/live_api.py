"""The API under test: its OpenAPI document, the data it is seeded with, and who calls it."""

import json
from dataclasses import dataclass
from typing import Any

from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

from inventory.models import StockItem
from orders.models import Order

ROLES = ("staff", "customer")
ANONYMOUS = "anonymous"  # no credentials: every operation but the token's answers 401


def openapi_document() -> dict[str, Any]:
    """The schema /api/schema/ serves, as plain JSON."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    return dict(json.loads(OpenApiJsonRenderer().render(document)))


@dataclass(frozen=True)
class Seed:
    """The rows the seed wrote, as they were once projected."""

    items: list[StockItem]
    order: Order

    def restore(self) -> None:
        """Back to the seed: drop what requests added and undo what they changed (restocks, cancellations).
        The read views need no undoing: no consumer runs while the tests call the API."""
        StockItem.objects.exclude(sku__in=[item.sku for item in self.items]).delete()
        StockItem.objects.bulk_update(self.items, ["on_hand", "reserved", "version"])
        Order.objects.exclude(pk=self.order.pk).delete()
        Order.objects.filter(pk=self.order.pk).update(
            status=self.order.status, reason=self.order.reason, version=self.order.version
        )


@dataclass(frozen=True)
class Target:
    """Where the API runs, who calls it, and what it holds."""

    base_url: str
    role: str
    token: str
    seed: Seed

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}
