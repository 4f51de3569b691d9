"""Seeing the bus: `manage.py streams`, /metrics, /healthz and /readyz, and the admin's bus status page,
all against the real Redis, the database and MongoDB."""

import json
import re
import threading
import time
from collections.abc import Iterator
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from eventing.consumer.runner import StreamConsumer
from eventing.contract import consumers as registry
from eventing.models import DeadLetter
from tests.eventing.conftest import staff_client
from tests.eventing.test_consumer import stock_added, xadd

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backlog(redis_client, stream) -> dict:
    """Lag and pending entries for the inventory group, and one dead letter of it."""
    StreamConsumer(name="inventory", block_ms=5).ensure_group()
    for n in range(5):
        xadd(redis_client, stream, stock_added(f"S-{n}"))
    redis_client.xreadgroup("inventory", "gone-consumer", {stream: ">"}, count=2)  # delivered, never acked
    now = timezone.now()
    DeadLetter.objects.create(
        stream=stream, entry_id="1-0", consumer_group="inventory", reason=DeadLetter.Reason.MAX_ATTEMPTS,
        attempts=5, first_failed_at=now, last_failed_at=now, payload="{}",
    )  # fmt: skip
    return {"lag": 3, "pending": 2}


def streams_json(*args: str) -> dict:
    from io import StringIO

    out = StringIO()
    try:
        call_command("streams", "--json", *args, stdout=out)
    except CommandError:
        pass
    return json.loads(out.getvalue())


def group(doc: dict, name: str) -> dict:
    [found] = [g for g in doc["streams"][0]["groups"] if g["name"] == name]
    return found


def test_streams_shows_each_groups_lag_pending_oldest_age_consumers_and_dead_letters(backlog, stream, capsys):
    doc = streams_json()
    inventory = group(doc, "inventory")

    assert doc["streams"][0]["name"] == stream and doc["streams"][0]["length"] == 5
    assert (inventory["lag"], inventory["pending"], inventory["dead_letters"]) == (3, 2, 1)
    assert 0 <= inventory["oldest_pending_age_seconds"] < 60
    assert [(c["name"], c["pending"], c["alive"]) for c in inventory["consumers"]] == [("gone-consumer", 2, False)]
    assert {g["name"] for g in doc["streams"][0]["groups"]} == set(registry.consumer_names())
    assert group(doc, "orders")["exists"] is False
    assert {"status": "PENDING", "reason": "max attempts", "count": 1} in doc["dead_letters"]

    call_command("streams")  # the table
    table = capsys.readouterr().out
    assert f"{stream}: 5 entries" in table and "gone-consumer (idle" in table and "no heartbeat" in table


@pytest.mark.parametrize(
    ("option", "breach"),
    [
        (["--max-lag", "2"], "inventory: lag 3 > 2"),
        (["--max-dead-letters", "0"], "inventory: 1 dead letter(s) pending > 0"),
        (["--min-alive", "1"], "inventory: 0 consumer(s) alive < 1"),
        (["--max-pending-age", "0"], "inventory: oldest pending entry"),
    ],
)
def test_streams_exits_non_zero_when_a_threshold_is_crossed(backlog, option, breach):
    with pytest.raises(CommandError, match="thresholds crossed") as crossed:
        call_command("streams", *option)
    assert breach in str(crossed.value)
    # At the limits, fine (a group not made yet lags by the whole stream).
    call_command("streams", "--max-lag", "5", "--max-dead-letters", "1")


def test_streams_refuses_a_negative_threshold():
    with pytest.raises(CommandError, match="--max-lag must not be negative"):
        call_command("streams", "--max-lag", "-1")


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_show_lag_pending_dead_letters_and_stream_length(backlog, stream, staff):
    samples = scrape(staff_client(staff))
    labels = (("group", "inventory"), ("stream", stream))

    assert samples[("eventing_status_up", ())] == 1
    assert samples[("eventing_group_lag", labels)] == 3
    assert samples[("eventing_group_pending", labels)] == 2
    assert samples[("eventing_group_consumers_alive", labels)] == 0
    assert samples[("eventing_group_dead_letters", labels)] == 1
    assert samples[("eventing_stream_length", (("stream", stream),))] == 5
    assert samples[("eventing_dead_letters", (("reason", "max attempts"), ("status", "PENDING")))] == 1
    assert samples[("eventing_outbox_backlog", ())] == 0


def test_metrics_count_what_a_consumer_processed_per_event_type(stream, redis_client, staff):
    for n in range(3):
        xadd(redis_client, stream, stock_added(f"M-{n}"))
    before = scrape(staff_client(staff)).get(
        ("eventing_events_processed_total", (("consumer", "orders"), ("event_type", "STOCK_ADDED"))), 0
    )
    StreamConsumer(name="orders", block_ms=5).run_until_idle()
    samples = scrape(staff_client(staff))
    key = (("consumer", "orders"), ("event_type", "STOCK_ADDED"))
    assert samples[("eventing_events_processed_total", key)] - before == 3
    assert samples[("eventing_handler_seconds_count", key)] >= 3


def test_metrics_need_a_bearer_token_or_staff(settings, user):
    settings.METRICS_TOKEN = "scrape-token-123"
    anonymous = Client()
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-123").status_code == 200
    customer = Client()
    customer.force_login(user)
    assert customer.get("/metrics").status_code == 401


@pytest.fixture
def running_consumers() -> Iterator[dict[str, threading.Event]]:
    """Every declared consumer, each running in a thread until its stop event is set."""
    stops: dict[str, threading.Event] = {}
    threads = []
    for name in registry.consumer_names():
        stops[name] = threading.Event()
        consumer = StreamConsumer(name=name, block_ms=50)
        threads.append(threading.Thread(target=consumer.run, kwargs={"stop": stops[name]}, daemon=True))
        threads[-1].start()
    yield stops
    for stop in stops.values():
        stop.set()
    for thread in threads:
        thread.join(timeout=10)


def wait_for_status(client: Client, status: int, *, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.json()
            return response.json()
        time.sleep(0.05)


def test_readyz_is_ready_with_every_consumer_running_and_503_soon_after_one_stops(running_consumers, settings):
    settings.REDIS_URL = settings.REDIS_URL  # the consumers' heartbeats go where readiness looks
    probe = Client()  # probes carry no credentials
    body = wait_for_status(probe, 200, timeout=15)
    assert body["status"] == "ready"
    assert body["checks"]["database"] == body["checks"]["redis"] == body["checks"]["mongodb"] == {"ok": True}

    running_consumers["inventory"].set()
    body = wait_for_status(probe, 503, timeout=5)  # a stopped consumer removes its heartbeat at once

    assert body["status"] == "not ready"
    assert body["checks"]["consumers"]["inventory"]["ok"] is False
    assert body["checks"]["consumers"]["orders"]["ok"] is True


def test_readyz_says_which_service_is_down_without_revealing_its_url(settings):
    settings.REDIS_URL = "redis://bus:hunter2-secret@127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] == {"ok": False, "problem": "Redis does not answer (ConnectionError)"}
    assert "hunter2" not in response.content.decode() and "127.0.0.1:1" not in response.content.decode()


def test_healthz_answers_without_credentials():
    response = Client().get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_the_admin_bus_status_page_shows_groups_and_links_their_dead_letters(backlog, stream, staff):
    page = staff_client(staff, "view_busstatuspage").get("/admin/eventing/busstatuspage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert stream in html and "gone-consumer" in html and "no heartbeat" in html
    assert "/admin/eventing/deadletter/?consumer_group=inventory&amp;status__exact=PENDING" in html
    without_permission = get_user_model().objects.create_user(username="staff-2", is_staff=True)
    assert staff_client(without_permission).get("/admin/eventing/busstatuspage/").status_code == 403


def test_a_groups_dead_letter_count_links_to_the_list_with_that_group_chosen_in_its_filter(backlog, stream, staff):
    """The link carries the list filter's own parameter: the sidebar shows the group chosen, and choosing
    another group there (or All) replaces it rather than adding to it (consumer_group__exact filtered the list
    but left "All" marked, and then "orders" listed nothing)."""
    now = timezone.now()
    DeadLetter.objects.create(
        stream=stream, entry_id="2-0", consumer_group="orders", reason=DeadLetter.Reason.MAX_ATTEMPTS,
        attempts=5, first_failed_at=now, last_failed_at=now, payload="{}",
    )  # fmt: skip
    client = staff_client(staff, "view_busstatuspage", "view_deadletter")
    html = client.get("/admin/eventing/busstatuspage/").content.decode()
    [link] = re.findall(r'<td>inventory</td>.*?<a href="(/admin/eventing/deadletter/\?[^"]*)"', html, re.DOTALL)

    page = client.get(unescape(link))
    listed = page.context["cl"]
    assert [letter.consumer_group for letter in listed.result_list] == ["inventory"]
    [by_group] = [spec for spec in listed.filter_specs if spec.title == "consumer group"]
    choices = list(by_group.choices(listed))
    assert [choice["display"] for choice in choices if choice["selected"]] == ["inventory"]

    [orders] = [choice for choice in choices if choice["display"] == "orders"]
    other = client.get(f"/admin/eventing/deadletter/{orders['query_string']}").context["cl"]
    assert [letter.consumer_group for letter in other.result_list] == ["orders"]
    [every] = [choice for choice in choices if choice["display"] == "All"]
    everything = client.get(f"/admin/eventing/deadletter/{every['query_string']}").context["cl"]
    assert sorted(letter.consumer_group for letter in everything.result_list) == ["inventory", "orders"]


def test_observe_each_counts_as_observe_does():
    """A batch's handler times are observed at once (observe_each writes prometheus-client's histogram
    counts itself): the samples must be those of observing each time in turn, bucket bounds included."""
    from prometheus_client import CollectorRegistry, Histogram

    from eventing.telemetry.metrics import LATENCY_BUCKETS, observe_each

    amounts = [0.0, 0.0001, 0.0005, 0.00050001, 0.001, 0.003, 0.05, 0.5, 9.9, 10.0, 10.5, 1e9, 0.0005]
    samples = []
    for observe in (lambda series: [series.observe(a) for a in amounts], lambda series: observe_each(series, amounts)):
        registry = CollectorRegistry()
        histogram = Histogram("t_seconds", "t", ["consumer"], buckets=LATENCY_BUCKETS, registry=registry)
        observe(histogram.labels("c"))
        samples.append(
            {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for m in registry.collect()
                for s in m.samples
                if not s.name.endswith("_created")
            }
        )
    one_by_one, at_once = samples
    total = ("t_seconds_sum", (("consumer", "c"),))
    assert at_once.pop(total) == pytest.approx(one_by_one.pop(total))  # added in another order
    assert at_once == one_by_one
    assert at_once[("t_seconds_count", (("consumer", "c"),))] == len(amounts)
