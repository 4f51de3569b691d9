"""Rebuilding views from the event log (blue/green), verifying them, and
recomputing the inventory's state from events alone."""

import io
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from mongoengine.connection import get_db

from eventing.consumer.runner import StreamConsumer
from eventing.contract.envelope import Envelope, utcnow
from eventing.readside import projections as views
from eventing.readside import replay
from eventing.readside.event_log import event_log_append_many
from eventing.readside.mongo import apply_changes
from inventory.events import StockAdded
from inventory.models import StockItem
from inventory.read_models import StockView
from inventory.services import stock_item_create
from orders.models import Order
from orders.read_models import CustomerOrderChunk, CustomerOrderCount, OrderView, order_view_changes, unpack_summary
from orders.selectors import customer_order_list
from orders.services import OrderLineIn, order_cancel, order_place
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def history():
    """Stock, orders that confirm, one rejected and one cancelled, all projected."""
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_item_create(sku="B", name="Banana", quantity=2)
    pump()
    orders = [
        order_place(customer_id="alice", lines=[OrderLineIn("A", 2)]),
        order_place(customer_id="alice", lines=[OrderLineIn("B", 3)]),
        order_place(customer_id="bob", lines=[OrderLineIn("A", 1), OrderLineIn("B", 1)]),
    ]
    pump()
    order_cancel(order_id=str(orders[0].id))
    pump()
    return orders


def live_rows(document) -> dict:
    return {row["_id"]: row for row in views.active_collection(document).find()}


def test_a_rebuild_fills_new_collections_switches_to_them_and_drops_the_old(history):
    before = {doc: live_rows(doc) for doc in (OrderView, CustomerOrderChunk, CustomerOrderCount, StockView)}

    result = replay.replay_views()

    assert result.switched and result.switch_ms is not None
    # Every logged event (the event index takes them all): ORDER_ CREATED x3, CONFIRMED x2, REJECTED,
    # CANCELLED; STOCK_ ADDED x2, RESERVED x2, RELEASED, and the STOCK_REJECTED only the index projects.
    assert result.events == 7 + 6
    current = views.aliases(fresh=True)
    for doc in (OrderView, CustomerOrderChunk, CustomerOrderCount, StockView):
        assert current[views.base_name(doc)].startswith(f"{views.base_name(doc)}__rebuild_")
        assert live_rows(doc) == before[doc]  # the same views, rebuilt from the log alone
    names = get_db().list_collection_names()
    assert "order_view" not in names and "stock_view" not in names  # the old ones are gone
    assert views.view_objects(OrderView)(pk=str(history[0].id)).first().status == "CANCELLED"


def test_a_dry_run_writes_nothing(history):
    names = set(get_db().list_collection_names())
    result = replay.replay_views(dry_run=True)
    assert result.rows == {
        "order_view": 3,
        "customer_order_chunks": 2,  # alice's first chunk and bob's
        "customer_order_counts": 2,  # their counts
        "stock_view": 2,
        "events_by_correlation": 6,  # 2 stock items added, 3 orders placed, 1 cancellation
        "events_by_aggregate": 5,  # 2 skus and 3 orders (each order's reservation shares its id)
    }
    assert set(get_db().list_collection_names()) == names
    assert views.aliases(fresh=True) == {}


def test_an_interrupted_rebuild_leaves_the_live_views_untouched(history, monkeypatch):
    before = live_rows(OrderView)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(replay, "_create_indexes", crash)
    with pytest.raises(KeyboardInterrupt):
        replay.replay_views(names=["orders"])

    assert views.aliases(fresh=True) == {}
    assert live_rows(OrderView) == before
    assert not [n for n in get_db().list_collection_names() if replay.REBUILD_MARK in n]


def test_events_logged_while_rebuilding_reach_the_switched_views(history):
    late = {}

    def during_the_fold(done: int, total: int) -> None:
        if not late:  # an order arrives while the rebuild runs; the live views get it first
            late["order"] = order_place(customer_id="carol", lines=[OrderLineIn("A", 1)])
            pump()

    replay.replay_views(progress=during_the_fold)

    view = views.view_objects(OrderView)(pk=str(late["order"].id)).first()
    assert view.status == "CONFIRMED"
    assert views.view_objects(StockView)(pk="A").first().reserved == 1 + 1  # bob's and carol's


def test_until_builds_the_views_as_of_then_without_switching(history):
    logged = sorted(get_db()["event_log"].find(), key=lambda r: (r["stream_ms"], r["stream_seq"]))
    cut = logged[3]["stream_entry_id"]

    result = replay.replay_views(names=["stock"], until=cut)

    assert not result.switched
    assert views.aliases(fresh=True) == {}
    assert get_db()[result.collections["stock_view"]].count_documents({}) >= 1


def test_a_bad_bound_or_projection_name_is_refused(history):
    with pytest.raises(replay.ReplayError, match="neither an ISO time nor a stream id"):
        replay.replay_views(since="yesterday")
    with pytest.raises(replay.ReplayError, match="unknown projection"):
        replay.replay_views(names=["nope"])
    with pytest.raises(CommandError, match="unknown projection"):
        call_command("replay_events", "--projection", "nope", stdout=io.StringIO(), stderr=io.StringIO())


def test_replay_events_command_reports_throughput_and_the_switch(history):
    out = io.StringIO()
    call_command("replay_events", "--no-progress", stdout=out, stderr=io.StringIO())
    assert "rebuilt event-index, orders, stock from 13 event(s)" in out.getvalue()
    assert "switched to" in out.getvalue()


def test_verify_projections_finds_no_drift_then_reports_each_difference(history):
    out = io.StringIO()
    call_command("verify_projections", stdout=out)
    assert "no drift" in out.getvalue()

    views.active_collection(StockView).update_one({"_id": "A"}, {"$set": {"available": 99}})
    StockItem.objects.filter(sku="B").update(on_hand=7)
    out = io.StringIO()
    with pytest.raises(CommandError, match="difference"):
        call_command("verify_projections", stdout=out)
    assert "stock_view/A: the view differs from the log in available" in out.getvalue()
    assert "stock_view/B: on_hand is 2 in the view but 7 in the database" in out.getvalue()


def test_rebuild_state_recomputes_the_inventory_from_events_alone(history):
    out = io.StringIO()
    call_command("rebuild_state", "inventory", "--check", stdout=out)
    assert "matches the database" in out.getvalue()

    StockItem.objects.filter(sku="A").update(reserved=0)
    out = io.StringIO()
    with pytest.raises(CommandError, match="difference"):
        call_command("rebuild_state", "inventory", "--check", stdout=out)
    assert "stock A: reserved is 0, the events say 1" in out.getvalue()
    with pytest.raises(CommandError, match="no state rebuild"):
        call_command("rebuild_state", "shipping", "--check")


def test_views_served_during_a_rebuild_come_from_the_old_collections(history):
    # Reads resolve the alias on each request (cached briefly); before the switch it is the old name.
    assert views.active_collection(OrderView).name == "order_view"
    replay.replay_views(names=["orders"])
    time.sleep(views.ALIAS_TTL_SECONDS)
    assert views.active_collection(OrderView).name.startswith("order_view__rebuild_")
    assert views.active_collection(StockView).name == "stock_view"


def test_a_log_holding_v1_events_replays_into_correct_views(history):
    # Rewrite the logged ORDER_CREATED events as version 1 wrote them: no channel field, and no customer_seq,
    # as the orders were placed before orders were numbered (which the upgrade's migration leaves at 0).
    log = get_db()["event_log"]
    for record in log.find({"type": "ORDER_CREATED"}):
        data = {k: v for k, v in record["data"].items() if k not in ("channel", "customer_seq")}
        log.replace_one({"_id": record["_id"]}, {**record, "version": 1, "data": data})
    assert log.count_documents({"type": "ORDER_CREATED", "version": 1}) == 3
    Order.objects.update(customer_seq=0)
    before = {key: {**row, "customer_seq": 0} for key, row in live_rows(OrderView).items()}

    replay.replay_views(names=["orders", "event-index"])

    assert live_rows(OrderView) == before
    assert customer_order_list(customer_id="alice").count() == 2  # listed from her legacy chunk
    assert call_command("verify_projections", stdout=io.StringIO()) is None


def test_a_redelivered_event_already_logged_is_indexed_as_the_log_holds_it(redis_client, stream):
    # A projections process logged the event, then stopped (killed, or its lease moved on) before it wrote the
    # log's indexes; the event comes again, received later, from another stream position.
    event = Envelope.wrap(StockAdded(sku="C", name="Cherry", quantity=1, on_hand=1, reserved=0), aggregate_version=1)
    first = Envelope.from_json(
        event.to_json(), stream=stream, entry_id="1-1", received_at=utcnow() - timedelta(hours=1)
    )
    assert event_log_append_many(envelopes=[first]) == {event.id}
    redis_client.xadd(stream, {"type": event.type, "data": event.to_json()})

    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    assert replay.verify_views(names=["event-index"]) == []


def test_a_redelivery_makes_the_listing_writes_a_stopped_process_did_not_make(redis_client, stream):
    # A projections process wrote an order's view row, then stopped (killed, or its batch failed) before the
    # customer's chunk and count, which derive from that row: the redelivery changes the row no more, and must
    # still bring the listing up to date.
    stock_item_create(sku="A", name="Apple", quantity=5)
    pump("inventory", "orders")  # the projections group does not exist yet: it will read from the start
    order = order_place(customer_id="alice", lines=[OrderLineIn("A", 2)])
    pump("inventory", "orders")
    for _id, fields in redis_client.xrange(stream):
        envelope = Envelope.from_json(fields["data"])
        if envelope.aggregate_type == "order":
            changes = [change for _doc, change in order_view_changes(envelope.event(), envelope)]
            apply_changes(views.active_collection(OrderView), changes)  # the row, not what derives from it

    pump("projections")

    assert replay.verify_views(names=["orders"]) == []
    chunk = views.active_collection(CustomerOrderChunk).find_one()
    assert unpack_summary(chunk["orders"][str(order.id)])["status"] == "CONFIRMED"
