from collections.abc import Sequence
from typing import Any, overload

from eventing.readside.mongo import read_rows
from eventing.readside.projections import active_collection, view_objects
from orders.read_models import (
    CustomerOrderIndex,
    CustomerOrderMonth,
    CustomerOrderYear,
    OrderView,
    bucket_key,
    unpack_summary,
)


def order_view_get(*, order_id: str, customer_id: str | None = None) -> OrderView | None:
    """The order's view; with ``customer_id``, only when it is that customer's order."""
    view: OrderView | None = view_objects(OrderView)(pk=order_id).first()
    if view is not None and customer_id is not None and view.customer_id != customer_id:
        return None
    return view


class CustomerOrderListing(Sequence[dict[str, Any]]):
    """A customer's order summaries, newest first, as a sequence a paginator slices. It reads the
    customer's index (their years) once, then their years in one query by ``_id`` (their months and
    counts), then the months a slice covers in one query by ``_id``: a page costs three lookups however
    many orders are stored."""

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        # The rows as pymongo reads them: a listing only copies their fields out, and mongoengine's
        # documents would cost more than the lookups.
        index = active_collection(CustomerOrderIndex).find_one({"_id": customer_id}) or {}
        keys = [bucket_key(customer_id, year) for year in index.get("years", {})]
        years = read_rows(active_collection(CustomerOrderYear), keys)
        months: dict[str, dict[str, int]] = {
            month: info for year in years.values() for month, info in year.get("months", {}).items()
        }
        self.months = sorted(((month, int(info["count"])) for month, info in months.items()), reverse=True)

    def count(self) -> int:  # type: ignore[override]  # the paginator's count(), not Sequence.count(value)
        return sum(count for _month, count in self.months)

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
        covered: list[tuple[str, int]] = []  # (month, the offset of its first order in the listing)
        offset = 0
        for month, count in self.months:
            if offset >= stop:
                break
            if offset + count > start:
                covered.append((month, offset))
            offset += count
        keys = [bucket_key(self.customer_id, month) for month, _first in covered]
        buckets = read_rows(active_collection(CustomerOrderMonth), keys)
        found: list[dict[str, Any]] = []
        for key, (_month, first) in zip(keys, covered, strict=True):
            found += self._newest_first(buckets.get(key, {}))[max(start - first, 0) : stop - first]
        return found

    def _newest_first(self, bucket: dict[str, Any]) -> list[dict[str, Any]]:
        orders = [
            {"id": order_id, "customer_id": self.customer_id, **unpack_summary(packed)}
            for order_id, packed in bucket.get("orders", {}).items()
        ]
        return sorted(orders, key=lambda order: (order["placed_at"], order["id"]), reverse=True)


def customer_order_list(*, customer_id: str) -> CustomerOrderListing:
    return CustomerOrderListing(customer_id)
