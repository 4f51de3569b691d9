from collections.abc import Sequence
from typing import Any, overload

from eventing.readside.mongo import read_rows
from eventing.readside.projections import active_collection, view_objects
from orders.read_models import (
    LEGACY_CHUNK,
    NUMBERED,
    CustomerOrderChunk,
    CustomerOrderCount,
    OrderView,
    chunk_key,
    chunk_number,
    unpack_summary,
)


def order_view_get(*, order_id: str, customer_id: str | None = None) -> OrderView | None:
    """The order's view; with ``customer_id``, only when it is that customer's order."""
    view: OrderView | None = view_objects(OrderView)(pk=order_id).first()
    if view is not None and customer_id is not None and view.customer_id != customer_id:
        return None
    return view


class CustomerOrderListing(Sequence[dict[str, Any]]):
    """A customer's order summaries, newest first, as a sequence a paginator slices. It reads the customer's
    count once; a slice then reads the chunks its orders' numbers fall in, in one query by ``_id``: a page costs
    two lookups of documents of bounded size, however many orders are stored. Position ``p`` of the listing is
    the order numbered ``numbered - p``; after the numbered orders come those placed before numbering (the
    legacy chunk), newest first. An order not projected yet leaves its place empty: a page is then one short."""

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        # The rows as pymongo reads them: a listing only copies their fields out, and mongoengine's
        # documents would cost more than the lookups.
        counts = (active_collection(CustomerOrderCount).find_one({"_id": customer_id}) or {}).get("counts", {})
        self.numbered = int(counts.get(NUMBERED, {}).get("version", 0))
        self.legacy = int(counts.get(LEGACY_CHUNK, {}).get("version", 0))

    def count(self) -> int:  # type: ignore[override]  # the paginator's count(), not Sequence.count(value)
        return self.numbered + self.legacy

    def __len__(self) -> int:
        return self.count()

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, int):
            return self[index : index + 1][0]
        start, stop, _step = index.indices(self.count())
        # Positions below ``numbered`` hold the numbered orders, newest first; the legacy orders follow them.
        newest, oldest = self.numbered - start, self.numbered - min(stop, self.numbered) + 1
        chunks = [str(n) for n in range(chunk_number(oldest), chunk_number(newest) + 1)] if newest >= oldest else []
        legacy_from, legacy_to = max(start - self.numbered, 0), max(stop - self.numbered, 0)
        if legacy_to > legacy_from:
            chunks.append(LEGACY_CHUNK)
        keys = [chunk_key(self.customer_id, chunk) for chunk in chunks]
        rows = read_rows(active_collection(CustomerOrderChunk), keys)
        numbered: list[dict[str, Any]] = []
        legacy: list[dict[str, Any]] = []
        for chunk, key in zip(chunks, keys, strict=True):
            if chunk == LEGACY_CHUNK:
                legacy = self._summaries(rows.get(key, {}))
            else:
                numbered += [s for s in self._summaries(rows.get(key, {})) if oldest <= s["customer_seq"] <= newest]
        numbered.sort(key=lambda summary: summary["customer_seq"], reverse=True)
        legacy.sort(key=lambda summary: (summary["placed_at"], summary["id"]), reverse=True)
        return numbered + legacy[legacy_from:legacy_to]

    def _summaries(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"id": order_id, "customer_id": self.customer_id, **unpack_summary(packed)}
            for order_id, packed in chunk.get("orders", {}).items()
        ]


def customer_order_list(*, customer_id: str) -> CustomerOrderListing:
    return CustomerOrderListing(customer_id)
