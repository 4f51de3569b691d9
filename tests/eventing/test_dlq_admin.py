"""The Django admin as the dead-letter console, against dead letters made by a real consumer."""

import html
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from eventing.contract import context
from eventing.contract.envelope import Envelope
from eventing.contract.errors import PermanentError
from eventing.models import DeadLetter, DeadLetterAction, ProcessedEvent
from eventing.services import dead_letter_discard
from eventing.transport.streams import retry_stream
from inventory.events import StockReserved
from orders.models import CatalogItem
from tests.eventing import test_failures
from tests.eventing.conftest import staff_client
from tests.eventing.test_consumer import stock_added, xadd
from tests.eventing.test_failures import run

pytestmark = pytest.mark.django_db(transaction=True)

# The consumer fixture and the fast retries of the failure tests, shared rather than copied.
probe = test_failures.probe
fast_retries = test_failures.fast_retries

CHANGELIST = "admin:eventing_deadletter_changelist"
MISSING_ORDER = "6f1c1a52-5a0e-4d55-9c2c-1f6f0f8b2a01"


@pytest.fixture
def dead_letters(redis_client, stream, probe) -> dict[str, DeadLetter]:
    """Three dead letters recorded by real consumers:
    - poison: group probe, STOCK_ADDED, a handler's permanent error, correlation id corr-poison-1;
    - garbled: group probe, an undecodable entry whose data is markup, not JSON;
    - reserved: group orders, STOCK_RESERVED for an order that does not exist, on another stream."""
    probe["error"] = PermanentError("cannot store this item")
    with context.bind(correlation_id="corr-poison-1"):
        poison = stock_added("POISON-1")
    xadd(redis_client, stream, poison)
    redis_client.xadd(stream, {"type": "STOCK_ADDED", "data": "<b>not json</b>"})
    run()
    other = f"{stream}-other"
    reserved = Envelope.wrap(StockReserved(order_id=MISSING_ORDER, lines=[], items=[]), aggregate_version=1)
    xadd(redis_client, other, reserved)
    run("orders", stream=other)
    return {
        "poison": DeadLetter.objects.get(event_id=poison.id),
        "garbled": DeadLetter.objects.get(reason="undecodable"),
        "reserved": DeadLetter.objects.get(event_id=reserved.id),
    }


def listed(client: Client, **params: str) -> set[int]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return {dead_letter.pk for dead_letter in response.context["cl"].result_list}


def date_filter(client: Client, title: str) -> dict[str, str]:
    """The query of one of the created-at filter's links, as the changelist offers it."""
    [spec] = [s for s in client.get(reverse(CHANGELIST)).context["cl"].filter_specs if s.title == "created at"]
    return {str(link_title): params for link_title, params in spec.links}[title]


def change_url(dead_letter: DeadLetter) -> str:
    return reverse("admin:eventing_deadletter_change", args=[dead_letter.pk])


def act(client: Client, action: str, *dead_letters: DeadLetter, follow: bool = False, **extra: str):
    """POST an action as the changelist's own form does (with its index) or, given extra fields, as a follow-up."""
    data = {"action": action, "_selected_action": [d.pk for d in dead_letters], **extra}
    if not extra:
        data.update({"index": "0", "select_across": "0"})
    return client.post(reverse(CHANGELIST), data, follow=follow)


def action_choices(response) -> set[str]:
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices if name}


def test_the_changelist_filters_by_group_type_status_reason_and_date(console, dead_letters):
    poison, garbled, reserved = dead_letters["poison"], dead_letters["garbled"], dead_letters["reserved"]
    dead_letter_discard(dead_letters=[garbled], actor="setup", reason="noise")
    DeadLetter.objects.filter(pk=reserved.pk).update(created_at=timezone.now() - timedelta(days=30))

    assert listed(console) == {poison.pk, garbled.pk, reserved.pk}
    assert listed(console, consumer_group="orders") == {reserved.pk}
    assert listed(console, consumer_group="probe") == {poison.pk, garbled.pk}
    assert listed(console, event_type="STOCK_RESERVED") == {reserved.pk}
    assert listed(console, status="DISCARDED") == {garbled.pk}
    assert listed(console, status="PENDING") == {poison.pk, reserved.pk}
    assert listed(console, reason="undecodable") == {garbled.pk}
    assert listed(console, reason="permanent error") == {poison.pk, reserved.pk}
    assert listed(console, **date_filter(console, "Past 7 days")) == {poison.pk, garbled.pk}
    assert listed(console, **date_filter(console, "Today")) == {poison.pk, garbled.pk}
    assert listed(console, consumer_group="probe", status="PENDING") == {poison.pk}


def test_the_changelist_shows_the_columns_and_filters_of_the_console(console, dead_letters):
    response = console.get(reverse(CHANGELIST))

    content = response.content.decode()
    for heading in ("Consumer group", "Event type", "Reason", "Status", "Attempts", "Last failed at", "Correlation id"):
        assert heading in content
    for filter_title in ("By consumer group", "By event type", "By status", "By reason", "By created at"):
        assert filter_title in content
    assert dead_letters["poison"].event_id in content


def test_search_finds_a_dead_letter_by_its_exact_event_id_or_correlation_id(console, dead_letters):
    poison, reserved = dead_letters["poison"], dead_letters["reserved"]

    assert listed(console, q=poison.event_id) == {poison.pk}
    assert listed(console, q="corr-poison-1") == {poison.pk}
    assert listed(console, q=reserved.correlation_id) == {reserved.pk}
    assert listed(console, q=poison.event_id[:8]) == set()  # ids are matched whole, never by fragment


def test_the_detail_page_shows_the_payload_pretty_printed_and_the_traceback(console, dead_letters):
    poison = dead_letters["poison"]

    response = console.get(change_url(poison))

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert '<pre style="white-space: pre-wrap">{\n  "data": {\n' in page  # the envelope in data is decoded too
    assert '\n      "sku": "POISON-1"\n    },\n' in page
    assert '"correlation_id": "corr-poison-1"' in page
    assert '"type": "STOCK_ADDED"' in page
    assert "Traceback (most recent call last)" in page
    assert "PermanentError: cannot store this item" in page
    assert poison.traceback.splitlines()[-1] in page


def test_the_detail_page_escapes_a_payload_that_is_not_json(console, dead_letters):
    response = console.get(change_url(dead_letters["garbled"]))

    content = response.content.decode()
    assert "<b>not json</b>" not in content
    assert "&quot;data&quot;: &quot;&lt;b&gt;not json&lt;/b&gt;&quot;" in content


def test_retrying_from_the_changelist_delivers_it_again_once_and_audits_it(console, dead_letters, probe, stream):
    poison = dead_letters["poison"]

    response = act(console, "retry_selected", poison, follow=True)

    assert response.status_code == 200
    assert "Re-delivered 1 dead letter(s); skipped 0." in [str(m) for m in response.context["messages"]]
    poison.refresh_from_db()
    assert poison.status == "RETRIED"
    action = DeadLetterAction.objects.get(dead_letter=poison)
    assert (action.kind, action.actor) == ("retry", "console-admin")
    assert action.result.startswith(f"re-delivered to probe as {retry_stream(stream, 'probe')}")

    probe["error"] = None  # the cause is fixed
    run()
    run()
    assert CatalogItem.objects.filter(sku="probe:POISON-1").count() == 1
    assert ProcessedEvent.objects.filter(consumer="probe", event_id=poison.event_id).count() == 1


def test_retrying_what_is_no_longer_pending_is_reported_as_skipped(console, dead_letters):
    poison, garbled = dead_letters["poison"], dead_letters["garbled"]
    dead_letter_discard(dead_letters=[garbled], actor="setup", reason="noise")

    response = act(console, "retry_selected", poison, garbled, follow=True)

    [message] = [str(m) for m in response.context["messages"]]
    assert message == f"Re-delivered 1 dead letter(s); skipped 1. #{garbled.pk}: not retried: it is already discarded."
    garbled.refresh_from_db()
    assert garbled.status == "DISCARDED"


def test_discarding_asks_for_a_reason_and_changes_nothing_without_one(console, dead_letters):
    poison = dead_letters["poison"]

    confirm = act(console, "discard_selected", poison)

    assert confirm.status_code == 200
    assert "admin/eventing/deadletter/discard_confirmation.html" in [t.name for t in confirm.templates]
    content = confirm.content.decode()
    assert f'name="_selected_action" value="{poison.pk}"' in content
    assert 'name="action" value="discard_selected"' in content
    assert 'name="post" value="yes"' in content
    assert "A reason is required" not in content  # asked for, not yet missing
    assert re.search(r'<textarea name="reason"[^>]* required', content)

    for blank in ("", "   "):
        again = act(console, "discard_selected", poison, post="yes", reason=blank)
        assert again.status_code == 200
        assert "admin/eventing/deadletter/discard_confirmation.html" in [t.name for t in again.templates]
        assert "A reason is required" in again.content.decode()
    poison.refresh_from_db()
    assert poison.status == "PENDING"
    assert not DeadLetterAction.objects.exists()


def test_discarding_with_a_reason_marks_it_discarded_and_audits_the_reason(console, dead_letters):
    poison, garbled = dead_letters["poison"], dead_letters["garbled"]

    response = act(console, "discard_selected", poison, garbled, post="yes", reason="fixed by hand in the shop")

    assert response.status_code == 302
    assert response["Location"] == reverse(CHANGELIST)
    assert set(DeadLetter.objects.filter(status="DISCARDED").values_list("pk", flat=True)) == {poison.pk, garbled.pk}
    actions = DeadLetterAction.objects.filter(kind="discard")
    assert {(a.dead_letter_id, a.actor, a.reason, a.result) for a in actions} == {
        (poison.pk, "console-admin", "fixed by hand in the shop", "discarded"),
        (garbled.pk, "console-admin", "fixed by hand in the shop", "discarded"),
    }
    assert len({a.batch for a in actions}) == 1
    detail = console.get(change_url(poison)).content.decode()
    assert "Audit trail" in detail and "fixed by hand in the shop" in detail
    assert DeadLetter.objects.get(pk=dead_letters["reserved"].pk).status == "PENDING"


def test_the_detail_page_buttons_retry_or_discard_that_one_dead_letter(console, dead_letters, probe):
    poison, reserved = dead_letters["poison"], dead_letters["reserved"]
    detail = console.get(change_url(poison)).content.decode()
    assert 'value="retry_selected"' in detail and 'value="discard_selected"' in detail

    retried = act(console, "retry_selected", poison, _from_detail="1")
    confirm = act(console, "discard_selected", reserved, _from_detail="1")
    discarded = act(console, "discard_selected", reserved, _from_detail="1", post="yes", reason="order was cancelled")

    assert (retried.status_code, retried["Location"]) == (302, change_url(poison))
    assert 'name="_from_detail" value="1"' in confirm.content.decode()
    assert (discarded.status_code, discarded["Location"]) == (302, change_url(reserved))
    assert DeadLetter.objects.get(pk=poison.pk).status == "RETRIED"
    assert DeadLetter.objects.get(pk=reserved.pk).status == "DISCARDED"
    # Nothing is left to decide, so the buttons are gone.
    assert 'value="retry_selected"' not in console.get(change_url(poison)).content.decode()


def test_a_user_with_only_view_permission_sees_the_list_and_detail_but_cannot_act(
    staff, console, dead_letters, redis_client, stream
):
    poison = dead_letters["poison"]
    dead_letter_discard(dead_letters=[dead_letters["garbled"]], actor="someone", reason="noise")
    viewer = staff_client(staff, "view_deadletter")

    changelist = viewer.get(reverse(CHANGELIST))
    detail = viewer.get(change_url(poison))
    audited = viewer.get(change_url(dead_letters["garbled"]))

    assert changelist.status_code == 200 and detail.status_code == 200
    assert {d.pk for d in changelist.context["cl"].result_list} == {d.pk for d in dead_letters.values()}
    assert action_choices(changelist) == set()
    assert "retry_selected" not in changelist.content.decode()
    assert "discard_selected" not in changelist.content.decode()
    assert "retry_selected" not in detail.content.decode()
    assert "PermanentError: cannot store this item" in html.unescape(detail.content.decode())
    assert "noise" in audited.content.decode()  # the audit trail is part of what they may see

    act(viewer, "retry_selected", poison)
    act(viewer, "retry_selected", poison, _from_detail="1")
    act(viewer, "discard_selected", poison, post="yes", reason="forged")

    poison.refresh_from_db()
    assert poison.status == "PENDING"
    assert not DeadLetterAction.objects.filter(dead_letter=poison).exists()
    assert redis_client.xlen(retry_stream(stream, "probe")) == 0


def test_each_action_needs_its_own_permission(staff, dead_letters):
    poison = dead_letters["poison"]
    retrier = staff_client(staff, "view_deadletter", "retry_deadletter")

    assert action_choices(retrier.get(reverse(CHANGELIST))) == {"retry_selected"}
    detail = retrier.get(change_url(poison)).content.decode()
    assert 'value="retry_selected"' in detail and 'value="discard_selected"' not in detail

    act(retrier, "discard_selected", poison, post="yes", reason="forged")
    assert DeadLetter.objects.get(pk=poison.pk).status == "PENDING"

    act(retrier, "retry_selected", poison)
    assert DeadLetter.objects.get(pk=poison.pk).status == "RETRIED"
    assert DeadLetterAction.objects.get().actor == "staff"


def test_a_superuser_has_both_actions_but_cannot_add_edit_or_delete_dead_letters(console, dead_letters):
    poison = dead_letters["poison"]

    assert action_choices(console.get(reverse(CHANGELIST))) == {"retry_selected", "discard_selected"}
    assert console.get(reverse("admin:eventing_deadletter_add")).status_code == 403
    assert console.get(reverse("admin:eventing_deadletter_delete", args=[poison.pk])).status_code == 403
    assert console.post(change_url(poison), {"status": "DISCARDED", "attempts": "0"}).status_code == 403
    detail = console.get(change_url(poison))
    assert detail.context["has_change_permission"] is False
    assert '<input type="text" name="event_type"' not in detail.content.decode()  # shown, never editable
    poison.refresh_from_db()
    assert (poison.status, poison.attempts) == ("PENDING", 1)


def test_the_audit_trail_has_its_own_read_only_list(console, dead_letters):
    act(console, "retry_selected", dead_letters["poison"])
    act(console, "discard_selected", dead_letters["reserved"], post="yes", reason="order was cancelled")
    changelist = reverse("admin:eventing_deadletteraction_changelist")

    everything = console.get(changelist)
    retries = console.get(changelist, {"kind": "retry"})

    assert everything.status_code == 200
    assert len(everything.context["cl"].result_list) == 2
    assert [a.dead_letter_id for a in retries.context["cl"].result_list] == [dead_letters["poison"].pk]
    assert action_choices(everything) == set()
    assert console.get(reverse("admin:eventing_deadletteraction_add")).status_code == 403
    action = DeadLetterAction.objects.get(kind="discard")
    assert console.post(reverse("admin:eventing_deadletteraction_change", args=[action.pk]), {}).status_code == 403
    assert console.get(reverse("admin:eventing_deadletteraction_delete", args=[action.pk])).status_code == 403
