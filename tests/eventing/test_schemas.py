"""Event schemas, publishing only what fits them, and reading older versions through upcasters."""

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, NotRequired, TypedDict

import pytest
from django.db import transaction

from eventing.consumer.runner import StreamConsumer
from eventing.contract import events
from eventing.contract.envelope import Envelope
from eventing.contract.errors import DeclarationError, InvalidEvent, OversizeEvent, UnsupportedVersion
from eventing.contract.events import Event, register_event, registered_event_types, upcaster
from eventing.contract.schemas import DIALECT, data_schema, envelope_schema, event_schema, type_schema, validate_event
from eventing.models import DeadLetter, OutboxEvent
from eventing.readside.event_log import EventRecord
from eventing.transport.outbox import record_event
from inventory.events import StockAdded, StockReserved
from inventory.models import Reservation
from inventory.read_models import StockView
from inventory.services import stock_item_create
from orders.events import OrderCreated
from orders.models import CatalogItem, Order
from orders.read_models import OrderView
from orders.services import OrderLineIn, order_place


def order_created(order_id: str = "o-1", **fields: Any) -> OrderCreated:
    values = {
        "order_id": order_id,
        "customer_id": "alice",
        "customer_seq": 1,
        "lines": [{"sku": "A-1", "quantity": 2}],
        "placed_at": "2026-01-01T00:00:00+00:00",
        "channel": "api",
    }
    return OrderCreated(**{**values, **fields})


def order_created_v1(order_id: str = "o-1") -> dict[str, Any]:
    """An ORDER_CREATED envelope as v1 code wrote it: version 1, no channel, no customer_seq."""
    doc = Envelope.wrap(order_created(order_id), aggregate_version=1).to_dict()
    del doc["data"]["channel"], doc["data"]["customer_seq"]
    return {**doc, "version": 1}


# -- Schemas ----------------------------------------------------------------------------------------


def test_the_schema_of_order_created_lists_its_fields_types_and_required_keys():
    schema = event_schema(event_class=OrderCreated)

    assert schema["$schema"] == DIALECT
    assert schema["title"] == "ORDER_CREATED v3"
    assert schema["description"].startswith("A customer placed an order.")
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["order_id", "customer_id", "lines", "placed_at", "channel", "customer_seq"]
    assert schema["properties"] == {
        "order_id": {"type": "string"},
        "customer_id": {"type": "string"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                "required": ["sku", "quantity"],
                "additionalProperties": False,
            },
        },
        "placed_at": {"type": "string"},
        "channel": {"type": "string"},
        "customer_seq": {"type": "integer"},
    }


class Parcel(TypedDict):
    weight: int
    fragile: bool
    note: NotRequired[str | None]


def test_hints_map_to_json_schema_with_typed_dicts_as_closed_objects():
    assert type_schema(hint=str | None) == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert type_schema(hint=dict) == {"type": "object"}
    assert type_schema(hint=dict[str, int]) == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert type_schema(hint=list[Parcel]) == {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "weight": {"type": "integer"},
                "fragile": {"type": "boolean"},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["weight", "fragile"],
            "additionalProperties": False,
        },
    }


@pytest.mark.parametrize("hint", [float, datetime, dict[int, str], list[tuple[str, int]]])
def test_a_field_type_json_cannot_carry_has_no_schema(hint):
    with pytest.raises(TypeError, match="no JSON Schema"):
        type_schema(hint=hint)


@pytest.mark.parametrize("event_type", sorted(registered_event_types()))
def test_every_registered_event_has_a_schema_and_a_description(event_type):
    cls = registered_event_types()[event_type]
    schema = event_schema(event_class=cls)
    assert schema["title"] == f"{event_type} v{cls.VERSION}"
    assert schema["description"], f"{cls.__name__} needs a docstring: it is the event's description"
    assert list(schema["properties"]) == [field.name for field in dataclasses.fields(cls)]


def test_the_envelope_schema_names_every_field_an_envelope_carries():
    untraced = Envelope.wrap(order_created(), aggregate_version=1).to_dict()
    trace = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "tracestate": "vendor=1"}
    traced = Envelope.wrap(order_created(), aggregate_version=1, trace=trace).to_dict()
    schema = envelope_schema()
    assert set(schema["properties"]) == set(traced) == set(untraced) | {"traceparent", "tracestate"}
    assert schema["required"] == list(untraced)  # the trace context only when the event was traced
    assert schema["additionalProperties"] is False


def test_the_trace_context_survives_the_round_trip_and_is_checked():
    trace = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}
    envelope = Envelope.wrap(order_created(), aggregate_version=1, trace=trace)
    back = Envelope.from_json(envelope.to_json())
    assert back.traceparent == trace["traceparent"] and back.tracestate is None
    assert back.trace_id == "a" * 32
    with pytest.raises(InvalidEvent, match="traceparent"):
        Envelope.from_dict({**envelope.to_dict(), "traceparent": 7})
    with pytest.raises(OversizeEvent, match="tracestate"):
        Envelope.from_dict({**envelope.to_dict(), "tracestate": "x" * 513})


# -- Publishing ---------------------------------------------------------------------------------------


def stock_added(**fields: Any) -> StockAdded:
    return StockAdded(**{"sku": "A-1", "name": "Lamp", "quantity": 3, "on_hand": 3, "reserved": 0, **fields})


def stock_reserved(lines: list[Any]) -> StockReserved:
    return StockReserved(order_id="o-1", lines=lines, items=[{"sku": "A-1", "on_hand": 3, "reserved": 1, "version": 2}])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("event", "message"),
    [
        (stock_added(quantity="3"), "quantity must be an integer"),
        (stock_added(on_hand=True), "on_hand must be an integer"),
        (stock_added(name=None), "name must be a str"),
        (stock_reserved([{"sku": "A-1"}]), r"lines\[0\].quantity is missing"),
        (stock_reserved([{"sku": "A-1", "quantity": 1, "price": 5}]), r"lines\[0\].price is not in the contract"),
        (stock_reserved({"sku": "A-1", "quantity": 1}), "lines must be a list"),
        (order_created(placed_at=datetime.now(UTC)), "placed_at must be a str"),
    ],
    ids=[
        "str-for-int",
        "bool-for-int",
        "null-for-str",
        "member-missing-key",
        "member-extra-key",
        "not-a-list",
        "datetime",
    ],
)
def test_publishing_an_event_that_does_not_fit_its_schema_is_refused_before_the_outbox_row(event, message):
    with transaction.atomic():
        with pytest.raises(InvalidEvent, match=message):
            record_event(sender=None, event=event, aggregate_version=1)
        # Nothing was written, not even a row its rollback would remove.
        assert not OutboxEvent.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_an_event_that_fits_gives_its_data_as_json_carries_it_in_a_copy_of_its_own():
    event = stock_reserved([{"sku": "A-1", "quantity": 1}])
    data = validate_event(event=event)
    assert data == json.loads(json.dumps(dataclasses.asdict(event)))
    data["lines"][0]["quantity"] = 9  # the envelope that keeps it never changes the event
    assert event.lines == [{"sku": "A-1", "quantity": 1}]


@pytest.mark.django_db(transaction=True)
def test_a_service_sending_an_event_that_does_not_fit_is_rolled_back_whole():
    CatalogItem.objects.create(sku="A-1", name="Lamp")
    with pytest.raises(InvalidEvent, match="channel must be a str"):
        order_place(customer_id="alice", lines=[OrderLineIn(sku="A-1", quantity=1)], channel=7)  # type: ignore[arg-type]
    assert not Order.objects.exists()
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_placing_an_order_publishes_order_created_v3_from_the_api_channel_with_the_customers_order_number():
    CatalogItem.objects.create(sku="A-1", name="Lamp")
    order_place(customer_id="alice", lines=[OrderLineIn(sku="A-1", quantity=1)])

    envelope = json.loads(OutboxEvent.objects.get().payload)
    assert (envelope["type"], envelope["version"], envelope["data"]["channel"]) == ("ORDER_CREATED", 3, "api")
    assert envelope["data"]["customer_seq"] == 1


# -- Upcasting ------------------------------------------------------------------------------------------


def test_a_v1_order_created_envelope_reads_as_v3_with_channel_unknown_and_no_number():
    doc = order_created_v1()

    event = Envelope.from_json(json.dumps(doc)).event()

    assert event == order_created(channel="unknown", customer_seq=0)


def test_a_v2_order_created_envelope_reads_as_v3_with_no_number():
    doc = Envelope.wrap(order_created(), aggregate_version=1).to_dict()
    del doc["data"]["customer_seq"]

    event = Envelope.from_json(json.dumps({**doc, "version": 2})).event()

    assert event == order_created(customer_seq=0)


def test_upcasting_leaves_the_envelope_data_as_it_was_written():
    envelope = Envelope.from_dict(order_created_v1())
    envelope.event()
    assert "channel" not in envelope.data and "customer_seq" not in envelope.data


def test_a_v4_order_created_envelope_is_an_unsupported_version():
    doc = Envelope.wrap(order_created(), aggregate_version=1).to_dict()
    with pytest.raises(UnsupportedVersion, match="ORDER_CREATED v4 is newer than this code knows"):
        Envelope.from_dict({**doc, "version": 4}).event()


def test_a_version_without_an_upcaster_step_is_an_unsupported_version(monkeypatch):
    monkeypatch.setattr(events, "_UPCASTERS", {k: v for k, v in events._UPCASTERS.items() if k[0] != "ORDER_CREATED"})
    with pytest.raises(UnsupportedVersion, match="no upcaster from v1 to v2 is registered"):
        Envelope.from_dict(order_created_v1()).event()


@pytest.fixture
def scratch_registry(monkeypatch):
    """Event types and upcasters registered by a test are forgotten after it."""
    monkeypatch.setattr(events, "_EVENT_TYPES", dict(events._EVENT_TYPES))
    monkeypatch.setattr(events, "_UPCASTERS", dict(events._UPCASTERS))


def parcel_sent_class() -> type[Event]:
    @register_event
    @dataclass(frozen=True, kw_only=True)
    class ParcelSent(Event):
        """A parcel left (a test's event type, now at v3)."""

        TYPE: ClassVar[str] = "TEST_PARCEL_SENT"
        VERSION: ClassVar[int] = 3
        AGGREGATE_TYPE: ClassVar[str] = "parcel"
        AGGREGATE_ID_FIELD: ClassVar[str] = "parcel_id"

        parcel_id: str
        weight_grams: int
        carrier: str

    return ParcelSent


def parcel_envelope(cls: type[Event], *, version: int, data: dict[str, Any]) -> Envelope:
    doc = Envelope.wrap(cls(parcel_id="p-1", weight_grams=1, carrier="-"), aggregate_version=1).to_dict()
    return Envelope.from_dict({**doc, "version": version, "data": data})


def test_upcasters_run_one_step_at_a_time_up_to_the_current_version(scratch_registry):
    parcel_sent = parcel_sent_class()

    @upcaster("TEST_PARCEL_SENT", from_version=1)
    def upcast_parcel_sent_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"parcel_id": data["parcel_id"], "weight_grams": data["weight_kg"] * 1000}

    @upcaster("TEST_PARCEL_SENT", from_version=2)
    def upcast_parcel_sent_v2_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "carrier": "post"}

    v1 = parcel_envelope(parcel_sent, version=1, data={"parcel_id": "p-1", "weight_kg": 2})
    v2 = parcel_envelope(parcel_sent, version=2, data={"parcel_id": "p-1", "weight_grams": 500})
    v3 = parcel_envelope(parcel_sent, version=3, data={"parcel_id": "p-1", "weight_grams": 500, "carrier": "van"})

    assert v1.event() == parcel_sent(parcel_id="p-1", weight_grams=2000, carrier="post")
    assert v2.event() == parcel_sent(parcel_id="p-1", weight_grams=500, carrier="post")
    assert v3.event() == parcel_sent(parcel_id="p-1", weight_grams=500, carrier="van")


def test_a_missing_step_in_the_middle_is_named(scratch_registry):
    parcel_sent = parcel_sent_class()
    upcaster("TEST_PARCEL_SENT", from_version=1)(lambda data: data)

    with pytest.raises(UnsupportedVersion, match="TEST_PARCEL_SENT v1 cannot be read as v3: no upcaster from v2 to v3"):
        parcel_envelope(parcel_sent, version=1, data={"parcel_id": "p-1"}).event()


def test_registering_a_second_upcaster_for_the_same_step_is_an_error(scratch_registry):
    with pytest.raises(DeclarationError, match="ORDER_CREATED has two upcasters from v1"):

        @upcaster("ORDER_CREATED", from_version=1)
        def another_upcast_order_created_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
            return data


@pytest.mark.parametrize("from_version", [0, -1, True, "1"])
def test_an_upcaster_needs_a_version_from_1(from_version):
    with pytest.raises(DeclarationError, match="from_version must be an integer from 1"):
        upcaster("ORDER_CREATED", from_version=from_version)


def test_an_upcaster_that_fails_on_the_data_makes_the_event_invalid(scratch_registry):
    parcel_sent = parcel_sent_class()

    @upcaster("TEST_PARCEL_SENT", from_version=2)
    def upcast_parcel_sent_v2_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "carrier": data["courier"]}

    with pytest.raises(InvalidEvent, match="upcast_parcel_sent_v2_v3 failed: KeyError"):
        parcel_envelope(parcel_sent, version=2, data={"parcel_id": "p-1", "weight_grams": 5}).event()


def test_upcast_data_is_checked_like_any_other():
    doc = order_created_v1()
    del doc["data"]["placed_at"]
    with pytest.raises(InvalidEvent, match="missing field"):
        Envelope.from_dict(doc).event()


# -- The consumer -----------------------------------------------------------------------------------------


def xadd_doc(redis_client, stream: str, doc: dict[str, Any]) -> str:
    return redis_client.xadd(
        stream, {"type": doc["type"], "data": json.dumps(doc, sort_keys=True), "timestamp": doc["occurred_at"]}
    )


@pytest.mark.django_db(transaction=True)
def test_a_v1_order_created_on_the_stream_builds_the_reservation_and_the_order_view(redis_client, stream):
    stock_item_create(sku="A-1", name="Lamp", quantity=5)  # published to this test's stream on commit
    order_id = str(uuid.uuid4())
    doc = order_created_v1(order_id)
    xadd_doc(redis_client, stream, doc)

    StreamConsumer(name="inventory", block_ms=5).run_until_idle()
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    reservation = Reservation.objects.get(order_id=order_id)
    assert reservation.status == Reservation.Status.RESERVED
    assert reservation.lines == [{"sku": "A-1", "quantity": 2}]
    view = OrderView.objects.get(pk=order_id)
    assert (view.status, view.customer_id, view.version) == ("PENDING", "alice", 1)
    assert view.lines == [{"sku": "A-1", "quantity": 2}]
    assert view.placed_at.replace(tzinfo=UTC) == datetime(2026, 1, 1, tzinfo=UTC)
    stock = StockView.objects.get(pk="A-1")
    assert (stock.on_hand, stock.reserved) == (5, 2)
    # The event log keeps the event as it was written.
    record = EventRecord.objects.get(pk=doc["id"])
    assert record.version == 1
    assert "channel" not in record.data
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_order_created_newer_than_the_code_is_dead_lettered_as_unsupported_version(redis_client, stream):
    doc = Envelope.wrap(order_created(str(uuid.uuid4())), aggregate_version=1).to_dict()
    xadd_doc(redis_client, stream, {**doc, "version": 4})

    StreamConsumer(name="inventory", block_ms=5).run_until_idle()

    dead = DeadLetter.objects.get()
    assert (dead.consumer_group, dead.event_type, dead.reason) == ("inventory", "ORDER_CREATED", "unsupported version")
    assert not Reservation.objects.exists()


def test_data_schema_refuses_an_event_with_a_field_json_cannot_carry():
    @dataclass(frozen=True, kw_only=True)
    class Measured(Event):
        TYPE: ClassVar[str] = "TEST_MEASURED"
        AGGREGATE_TYPE: ClassVar[str] = "probe"
        AGGREGATE_ID_FIELD: ClassVar[str] = "probe_id"

        probe_id: str
        value: float

    with pytest.raises(TypeError, match=r"Measured \(TEST_MEASURED\).*float"):
        data_schema(event_class=Measured)


def test_an_event_type_longer_than_the_type_columns_is_refused_at_declaration(scratch_registry):
    with pytest.raises(DeclarationError, match="TYPE must be 1 to 100 characters"):

        @register_event
        @dataclass(frozen=True, kw_only=True)
        class Verbose(Event):
            TYPE: ClassVar[str] = "T" * 101
            AGGREGATE_TYPE: ClassVar[str] = "verbose"
            AGGREGATE_ID_FIELD: ClassVar[str] = "verbose_id"

            verbose_id: str
