"""The contract guard: every event matches the committed schema of its version, every
version can be reached by upcasters, and the catalogue in docs/ is current."""

import json
import shutil
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.core.management import CommandError, call_command

from eventing.catalog import CATALOG_MARKDOWN, CATALOG_SCHEMA, catalog_markdown, consumers
from eventing.contract import events
from eventing.contract.events import registered_event_types, upcaster
from eventing.contract.schemas import producer
from eventing.contract.versions import CONTRACTS_DIR, ContractError, catalog, contract_problems, contracts_update
from orders.events import OrderCreated, OrderEvent, OrderLineData


@pytest.mark.parametrize("event_type", sorted(registered_event_types()))
def test_every_registered_event_matches_the_committed_contract_of_its_version(event_type):
    assert contract_problems(event_types={event_type: registered_event_types()[event_type]}) == []


def test_every_committed_contract_belongs_to_a_version_of_a_registered_event():
    current = {event_type: cls.VERSION for event_type, cls in registered_event_types().items()}
    for path in sorted(CONTRACTS_DIR.glob("*.json")):
        event_type, version = path.name.removesuffix(".json").rsplit(".v", 1)
        assert event_type in current, f"{path.name}: {event_type} is not a registered event type"
        assert 1 <= int(version) <= current[event_type], f"{path.name}: {event_type} is at v{current[event_type]}"


# -- The guard trips --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OrderCreatedWithACoupon(OrderEvent):
    """ORDER_CREATED v3 as someone might edit it: a new field, and no version bump."""

    TYPE: ClassVar[str] = "ORDER_CREATED"
    VERSION: ClassVar[int] = 3

    lines: list[OrderLineData]
    placed_at: str
    channel: str
    customer_seq: int
    coupon: str


@dataclass(frozen=True, kw_only=True)
class OrderCreatedV4(OrderEvent):
    """ORDER_CREATED bumped to v4 with a new field."""

    TYPE: ClassVar[str] = "ORDER_CREATED"
    VERSION: ClassVar[int] = 4

    lines: list[OrderLineData]
    placed_at: str
    channel: str
    customer_seq: int
    coupon: str


@pytest.fixture
def contracts(tmp_path) -> Path:
    """A copy of the committed contracts to add to."""
    directory = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, directory)
    return directory


@pytest.fixture
def scratch_upcasters(monkeypatch):
    monkeypatch.setattr(events, "_UPCASTERS", dict(events._UPCASTERS))


def test_fields_changed_without_a_version_bump_are_reported():
    problems = contract_problems(event_types={"ORDER_CREATED": OrderCreatedWithACoupon})

    assert problems == [
        "fields of ORDER_CREATED changed without a version bump: bump VERSION and add an upcaster from v3"
    ]


def test_a_changed_type_or_a_removed_field_is_reported_too():
    @dataclass(frozen=True, kw_only=True)
    class ChannelAsNumber(OrderEvent):
        TYPE: ClassVar[str] = "ORDER_CREATED"
        VERSION: ClassVar[int] = 3

        lines: list[OrderLineData]
        placed_at: str
        channel: int
        customer_seq: int

    @dataclass(frozen=True, kw_only=True)
    class NoPlacedAt(OrderEvent):
        TYPE: ClassVar[str] = "ORDER_CREATED"
        VERSION: ClassVar[int] = 3

        lines: list[OrderLineData]
        channel: str
        customer_seq: int

    for changed in (ChannelAsNumber, NoPlacedAt):
        assert any(
            "fields of ORDER_CREATED changed" in p for p in contract_problems(event_types={"ORDER_CREATED": changed})
        )


def test_a_new_version_without_an_upcaster_from_the_previous_one_is_reported(contracts):
    contracts_update(event_types={"ORDER_CREATED": OrderCreatedV4}, directory=contracts)

    problems = contract_problems(event_types={"ORDER_CREATED": OrderCreatedV4}, directory=contracts)

    assert problems == ["ORDER_CREATED v4 has no upcaster from v3: add @upcaster('ORDER_CREATED', from_version=3)"]


def test_a_missing_snapshot_for_the_current_version_is_reported(contracts):
    (contracts / "ORDER_CREATED.v3.json").unlink()

    problems = contract_problems(directory=contracts)

    assert problems == [
        "ORDER_CREATED v3 has no contract snapshot ORDER_CREATED.v3.json: "
        "run `manage.py event_catalog --update-contracts`"
    ]


def test_an_upcaster_that_leaves_out_the_new_field_is_reported(contracts, scratch_upcasters):
    contracts_update(event_types={"ORDER_CREATED": OrderCreatedV4}, directory=contracts)

    @upcaster("ORDER_CREATED", from_version=3)
    def upcast_order_created_v3_v4(data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)  # forgets the coupon

    problems = contract_problems(event_types={"ORDER_CREATED": OrderCreatedV4}, directory=contracts)

    assert problems == [
        "a v1 ORDER_CREATED upcast to v4 does not fit v4: missing field(s) coupon",
        "a v2 ORDER_CREATED upcast to v4 does not fit v4: missing field(s) coupon",
        "a v3 ORDER_CREATED upcast to v4 does not fit v4: missing field(s) coupon",
    ]


def test_a_new_version_with_its_upcaster_and_snapshot_passes(contracts, scratch_upcasters):
    @upcaster("ORDER_CREATED", from_version=3)
    def upcast_order_created_v3_v4(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "coupon": ""}

    assert contracts_update(event_types={"ORDER_CREATED": OrderCreatedV4}, directory=contracts) == [
        contracts / "ORDER_CREATED.v4.json"
    ]
    assert contract_problems(event_types={"ORDER_CREATED": OrderCreatedV4}, directory=contracts) == []


def test_an_upcaster_from_the_current_version_needs_a_version_bump(scratch_upcasters):
    upcaster("ORDER_CREATED", from_version=3)(lambda data: data)

    assert contract_problems(event_types={"ORDER_CREATED": OrderCreated}) == [
        "ORDER_CREATED has an upcaster from v3 but its VERSION is 3: bump VERSION"
    ]


def test_updating_contracts_writes_only_missing_snapshots_and_never_rewrites_one(tmp_path):
    written = contracts_update(directory=tmp_path)

    assert sorted(p.name for p in written) == sorted(
        f"{event_type}.v{cls.VERSION}.json" for event_type, cls in registered_event_types().items()
    )
    assert json.loads((tmp_path / "ORDER_CREATED.v3.json").read_text()) == json.loads(
        (CONTRACTS_DIR / "ORDER_CREATED.v3.json").read_text()
    )
    assert contracts_update(directory=tmp_path) == []
    with pytest.raises(ContractError, match="fields of ORDER_CREATED changed without a version bump"):
        contracts_update(event_types={"ORDER_CREATED": OrderCreatedWithACoupon}, directory=tmp_path)


# -- The catalogue --------------------------------------------------------------------------------------


def test_the_committed_catalogue_is_current():
    out = StringIO()
    call_command("event_catalog", "--check", stdout=out)
    assert "up to date" in out.getvalue()


def test_the_catalogue_check_fails_when_a_file_is_stale_or_missing(tmp_path):
    call_command("event_catalog", "--output-dir", str(tmp_path), stdout=StringIO())
    assert sorted(p.name for p in tmp_path.iterdir()) == [CATALOG_MARKDOWN, CATALOG_SCHEMA]
    call_command("event_catalog", "--check", "--output-dir", str(tmp_path), stdout=StringIO())

    markdown = tmp_path / CATALOG_MARKDOWN
    markdown.write_text(markdown.read_text().replace("inventory, projections", "projections"))
    with pytest.raises(CommandError, match=f"stale.*{CATALOG_MARKDOWN}"):
        call_command("event_catalog", "--check", "--output-dir", str(tmp_path))

    (tmp_path / CATALOG_SCHEMA).unlink()
    with pytest.raises(CommandError, match=CATALOG_SCHEMA):
        call_command("event_catalog", "--check", "--output-dir", str(tmp_path))


def test_the_catalogue_names_the_producer_and_the_consumers_of_order_created():
    assert producer(event_class=OrderCreated) == "orders"
    assert consumers(event_type="ORDER_CREATED") == ["inventory", "projections"]

    markdown = catalog_markdown()
    assert "| [ORDER_CREATED](#order_created) | 3 | orders | inventory, projections |" in markdown
    section = markdown.split("## ORDER_CREATED\n", 1)[1].split("\n## ", 1)[0]
    assert "- Producer: orders (`orders.events.OrderCreated`)" in section
    assert "- Consumers: inventory, projections" in section
    assert "| `lines[].quantity` | integer | yes |" in section
    assert "| `channel` | string | yes |" in section
    assert "| v1 | first version | `orders.events.upcast_order_created_v1_v2`" in section
    assert "| v2 | adds `channel` | `orders.events.upcast_order_created_v2_v3`" in section
    assert "| v3 (current) | adds `customer_seq` | — |" in section


def test_the_schema_file_holds_the_envelope_and_every_version_of_every_event():
    schemas = catalog()

    assert list(schemas)[0] == "envelope"
    assert {"ORDER_CREATED/v1", "ORDER_CREATED/v2", "ORDER_CREATED/v3", "STOCK_ADDED/v1"} <= set(schemas)
    assert "channel" not in schemas["ORDER_CREATED/v1"]["properties"]
    assert schemas["ORDER_CREATED/v2"]["properties"]["channel"] == {"type": "string"}
    assert schemas["ORDER_CREATED/v3"]["properties"]["customer_seq"] == {"type": "integer"}
