"""F6, F7, F8: poison, duplicate, malformed and hostile events in a running system."""

import json
import random
import re
import urllib.parse
import urllib.request
import uuid
from http.cookiejar import CookieJar

from tests.e2e.invariants import check_invariants
from tests.e2e.system import System
from tests.e2e.test_order_flow import make_orders
from tests.eventing.test_hostile_entries import SIX
from tests.faults.conftest import report

STOCK = {"HOT-1": 100, "HOT-2": 80, "COOL-1": 200}


def rows(system: System, model: str) -> list[dict]:
    return [row["fields"] | {"pk": row["pk"]} for row in system.dumpdata(model)]


class AdminSession:
    """A browser-like session on the Django admin: cookies, CSRF token, form posts."""

    def __init__(self, system: System) -> None:
        self.base = system.base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.post("/admin/login/", {"username": "e2e-staff", "password": system.password, "next": "/admin/"})

    def get(self, path: str) -> str:
        with self.opener.open(f"{self.base}{path}", timeout=30) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict) -> str:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.get(path)).group(1)
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}, doseq=True).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data)  # noqa: S310 - loopback only
        with self.opener.open(request, timeout=30) as response:
            return response.read().decode()


def test_f6_a_poison_event_is_dead_lettered_after_max_attempts_and_applied_once_after_an_admin_retry(
    make_system, tmp_path
):
    fixed = tmp_path / "audit-store-fixed"
    system = make_system(
        consumers={"inventory": 1, "orders": 1, "projections": 1, "audit": 1},
        env={
            "EVENTING_EXTRA_HANDLER_MODULES": "tests.faults.poison_handlers",
            "POISON_FIXED_FILE": str(fixed),
            "EVENTING_MAX_ATTEMPTS": "5",
        },
    )
    system.add_stock(STOCK)
    bodies = make_orders(random.Random(6), count=30, stock=STOCK)
    bodies.insert(10, {"customer_id": "poison", "lines": [{"sku": "COOL-1", "quantity": 1}]})
    placed = system.place_orders(bodies, threads=4)
    poison_order = placed[10]["id"]
    system.wait_settled(timeout=120)

    [dead] = rows(system, "eventing.deadletter")
    assert (dead["consumer_group"], dead["event_type"], dead["reason"]) == ("audit", "ORDER_CREATED", "max attempts")
    assert dead["attempts"] == 5
    assert system.log("audit-0").count("failed, attempt") == 5  # exactly five deliveries
    audited = {r["pk"] for r in rows(system, "orders.catalogitem") if r["pk"].startswith("audit:")}
    assert audited == {f"audit:{o['id']}" for o in placed if o["id"] != poison_order}  # the others kept flowing

    fixed.touch()  # the cause is fixed
    admin = AdminSession(system)
    page = admin.post(
        "/admin/eventing/deadletter/", {"action": "retry_selected", "_selected_action": [dead["pk"]], "index": 0}
    )
    assert "Re-delivered 1" in page
    system.wait_settled(timeout=60)

    audited = [r for r in rows(system, "orders.catalogitem") if r["pk"] == f"audit:{poison_order}"]
    assert len(audited) == 1  # applied once
    [dead] = rows(system, "eventing.deadletter")
    assert dead["status"] == "RETRIED"
    [action] = rows(system, "eventing.deadletteraction")
    assert (action["kind"], action["actor"]) == ("retry", "e2e-staff")
    check_invariants(system, placed, dead_letters=1)
    report("F6 poison event", attempts=dead["attempts"], applied_after_retry=len(audited))


def test_f7_duplicate_deliveries_and_a_relay_republishing_100_events_apply_each_effect_once(make_system):
    system = make_system()
    system.add_stock(STOCK)
    placed = system.place_orders(make_orders(random.Random(7), count=60, stock=STOCK))
    system.wait_settled(timeout=120)
    before = check_invariants(system, placed)

    # The same event id delivered twice ...
    entry_id, fields = next((i, f) for i, f in system.redis.xrange(system.stream) if f["type"] == "ORDER_CREATED")
    system.redis.xadd(system.stream, fields)
    # ... and the relay re-publishing 100 events, as after a crash between XADD and marking them published.
    system.manage(
        "shell",
        "-c",
        "from eventing.models import OutboxEvent as O; "
        "O.objects.filter(id__in=list(O.objects.order_by('id').values_list('id', flat=True)[:100]))"
        ".update(published_at=None)",
    )
    system.wait_for(
        lambda: all(row["published_at"] for row in rows(system, "eventing.outboxevent")),
        timeout=60,
        what="the relay to re-publish them",
    )
    system.wait_settled(timeout=120)

    after = check_invariants(system, placed)
    assert after.applied == before.applied  # no relational effect twice
    assert after.produced == before.produced and after.logged == before.logged
    assert after.duplicates_skipped.get("projections", 0) >= 101
    report("F7 duplicates", redelivered=101, skipped=after.duplicates_skipped, applied_twice=0)


def malformed_entries(system: System) -> dict[str, dict[str, str]]:
    valid = json.loads(next(f["data"] for _, f in system.redis.xrange(system.stream)))

    def envelope(**changes) -> str:
        return json.dumps({**valid, "id": str(uuid.uuid4()), **changes})

    return {
        "undecodable": {"type": "ORDER_CREATED", "data": "{this is not json", "timestamp": "x"},
        "no data field": {"type": "ORDER_CREATED", "timestamp": "x"},
        "unknown type": {"type": "ORDER_SHIPPED", "data": envelope(type="ORDER_SHIPPED")},
        "unsupported version": {"type": valid["type"], "data": envelope(version=99)},
        "oversize": {"type": valid["type"], "data": envelope(causation_id="x" * 5000)},
    }


def test_f8_malformed_entries_are_dead_lettered_on_first_delivery_and_the_consumers_keep_running(make_system):
    system = make_system(env={"EVENTING_MAX_PAYLOAD_BYTES": "4096"})
    system.add_stock(STOCK)
    for fields in malformed_entries(system).values():
        system.redis.xadd(system.stream, fields)
    for fields, _reason in SIX.values():  # the entries that once stopped every consumer for good
        system.redis.xadd(system.stream, fields)
    placed = system.place_orders(make_orders(random.Random(8), count=30, stock=STOCK))
    system.wait_settled(timeout=120)

    assert all(proc.poll() is None for proc in system.procs.values())  # nobody crashed
    dead = rows(system, "eventing.deadletter")
    by_group: dict[str, list[str]] = {}
    for row in dead:
        by_group.setdefault(row["consumer_group"], []).append(row["reason"])
        assert row["attempts"] == 1
    six = [reason for _fields, reason in SIX.values()]  # 100 KB of nesting is oversize here too
    expected = sorted(["undecodable", "undecodable", "unknown type", "unsupported version", "oversize", *six])
    # The future version is of STOCK_ADDED, which the inventory group does not handle: it acks it unread.
    assert {group: sorted(reasons) for group, reasons in by_group.items()} == {
        "inventory": [r for r in expected if r != "unsupported version"],
        "orders": expected,
        "projections": expected,
    }
    check_invariants(system, placed, dead_letters=14 + 3 * len(SIX))
    report("F8 malformed entries", dead_lettered=len(dead), reasons=sorted(set(expected)))
