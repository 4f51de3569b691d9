"""`manage.py dlq`: the dead-letter console on the command line, against dead letters made by a real consumer."""

import getpass
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from eventing.models import DeadLetter, DeadLetterAction, ProcessedEvent
from eventing.services import dead_letter_discard
from eventing.transport.streams import retry_stream
from orders.models import CatalogItem
from tests.eventing import test_dlq_admin, test_failures
from tests.eventing.test_failures import run

pytestmark = pytest.mark.django_db(transaction=True)

# The same real dead letters as the admin tests: poison (probe), garbled (probe, undecodable), reserved (orders).
probe = test_failures.probe
fast_retries = test_failures.fast_retries
dead_letters = test_dlq_admin.dead_letters

CLI_ACTOR = f"cli:{getpass.getuser()}"


def dlq(*args: str) -> str:
    out = io.StringIO()
    call_command("dlq", *args, stdout=out)
    return out.getvalue()


def listed_ids(*args: str) -> set[int]:
    return {json.loads(line)["id"] for line in dlq("list", "--json", *args).splitlines()}


def test_list_prints_a_table_of_dead_letters_newest_first(dead_letters):
    poison, garbled, reserved = dead_letters["poison"], dead_letters["garbled"], dead_letters["reserved"]

    lines = dlq("list").splitlines()

    assert lines[0].split() == ["id", "group", "type", "reason", "status", "attempts", "last", "failure", "event", "id"]
    ids = [int(line.split()[0]) for line in lines[1:]]
    assert ids[0] == reserved.pk  # dead-lettered last, by the second consumer
    assert sorted(ids) == sorted([poison.pk, garbled.pk, reserved.pk])
    row = next(line for line in lines if line.startswith(f"{poison.pk} "))
    for cell in ("probe", "STOCK_ADDED", "permanent error", "PENDING", poison.event_id):
        assert cell in row
    assert poison.last_failed_at.isoformat(timespec="seconds") in row


def test_list_as_json_lines_carries_the_fields(dead_letters):
    poison = dead_letters["poison"]

    docs = [json.loads(line) for line in dlq("list", "--json", "--search", poison.event_id).splitlines()]

    assert len(docs) == 1
    doc = docs[0]
    assert doc["id"] == poison.pk
    assert (doc["consumer_group"], doc["event_type"], doc["reason"], doc["status"], doc["attempts"]) == (
        "probe",
        "STOCK_ADDED",
        "permanent error",
        "PENDING",
        1,
    )
    assert (doc["event_id"], doc["correlation_id"]) == (poison.event_id, "corr-poison-1")
    assert doc["error_class"] == "eventing.contract.errors.PermanentError"


def test_list_filters_like_the_admin(dead_letters):
    poison, garbled, reserved = dead_letters["poison"], dead_letters["garbled"], dead_letters["reserved"]
    dead_letter_discard(dead_letters=[garbled], actor="setup", reason="noise")
    DeadLetter.objects.filter(pk=reserved.pk).update(created_at=timezone.now() - timedelta(days=30))
    week_ago = timezone.localdate() - timedelta(days=7)

    assert listed_ids() == {poison.pk, garbled.pk, reserved.pk}
    assert listed_ids("--group", "orders") == {reserved.pk}
    assert listed_ids("--type", "STOCK_ADDED") == {poison.pk, garbled.pk}
    assert listed_ids("--status", "DISCARDED") == {garbled.pk}
    assert listed_ids("--status", "pending") == {poison.pk, reserved.pk}
    assert listed_ids("--reason", "undecodable") == {garbled.pk}
    assert listed_ids("--since", week_ago.isoformat()) == {poison.pk, garbled.pk}
    assert listed_ids("--since", (timezone.now() - timedelta(days=31)).isoformat()) == {
        poison.pk,
        garbled.pk,
        reserved.pk,
    }
    assert listed_ids("--search", "corr-poison-1") == {poison.pk}
    assert listed_ids("--search", reserved.event_id) == {reserved.pk}
    assert listed_ids("--group", "probe", "--status", "PENDING") == {poison.pk}
    assert len(listed_ids("--limit", "2")) == 2


def test_list_says_so_when_nothing_matches(dead_letters):
    assert dlq("list", "--group", "nobody") == "No dead letters match.\n"
    assert dlq("list", "--group", "nobody", "--json") == ""


def test_show_prints_every_field_the_pretty_payload_the_traceback_and_the_audit_trail(dead_letters):
    poison = dead_letters["poison"]
    dead_letter_discard(dead_letters=[poison], actor="ops", reason="fixed by hand")

    out = dlq("show", str(poison.pk))

    for line in (
        f"id: {poison.pk}",
        "consumer_group: probe",
        "event_type: STOCK_ADDED",
        f"event_id: {poison.event_id}",
        "correlation_id: corr-poison-1",
        "reason: permanent error",
        "attempts: 1",
        "status: DISCARDED",
        f"stream: {poison.stream}",
        f"entry_id: {poison.entry_id}",
        "error_class: eventing.contract.errors.PermanentError",
        "error_message: cannot store this item",
        f"last_failed_at: {poison.last_failed_at.isoformat()}",
    ):
        assert line in out.splitlines()
    assert "Traceback (most recent call last):" in out
    assert "eventing.contract.errors.PermanentError: cannot store this item" in out
    assert '\n  "data": {\n' in out and '\n      "sku": "POISON-1"\n' in out
    assert "audit trail: 1" in out
    assert "discard by ops (reason: fixed by hand): discarded" in out


def test_show_prints_an_undecodable_payload_as_it_was_read(dead_letters):
    out = dlq("show", str(dead_letters["garbled"].pk))

    assert '"data": "<b>not json</b>"' in out
    assert "audit trail: none" in out


def test_retry_by_id_delivers_it_again_to_its_own_group_and_audits_the_cli_user(
    dead_letters, probe, redis_client, stream
):
    poison = dead_letters["poison"]

    out = dlq("retry", str(poison.pk))

    assert f"#{poison.pk} " in out and f": retried: re-delivered to probe as {retry_stream(stream, 'probe')}" in out
    assert out.endswith("1 retried, 0 skipped.\n")
    poison.refresh_from_db()
    assert poison.status == "RETRIED"
    action = DeadLetterAction.objects.get()
    assert (action.dead_letter_id, action.kind, action.actor) == (poison.pk, "retry", CLI_ACTOR)
    assert redis_client.xlen(retry_stream(stream, "probe")) == 1

    probe["error"] = None  # the cause is fixed
    run()
    run()
    assert CatalogItem.objects.filter(sku="probe:POISON-1").count() == 1
    assert ProcessedEvent.objects.filter(consumer="probe", event_id=poison.event_id).count() == 1


def test_retry_reports_entries_that_are_no_longer_pending_as_skipped(dead_letters):
    poison, garbled = dead_letters["poison"], dead_letters["garbled"]
    dead_letter_discard(dead_letters=[garbled], actor="ops", reason="noise")

    out = dlq("retry", str(poison.pk), str(garbled.pk))

    assert f"#{garbled.pk} " in out and ": skipped: not retried: it is already discarded" in out
    assert out.endswith("1 retried, 1 skipped.\n")
    assert DeadLetter.objects.get(pk=garbled.pk).status == "DISCARDED"


def test_retry_all_takes_the_pending_dead_letters_the_filters_match(dead_letters):
    poison, garbled, reserved = dead_letters["poison"], dead_letters["garbled"], dead_letters["reserved"]
    dead_letter_discard(dead_letters=[garbled], actor="ops", reason="noise")

    out = dlq("retry", "--all", "--group", "probe")

    assert out.endswith("1 retried, 0 skipped.\n")
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert statuses == {poison.pk: "RETRIED", garbled.pk: "DISCARDED", reserved.pk: "PENDING"}
    assert dlq("retry", "--all", "--group", "probe") == "No dead letters match.\n"
    assert DeadLetterAction.objects.filter(kind="retry").count() == 1


def test_discard_by_id_with_a_reason_marks_it_discarded_and_audits_the_reason(dead_letters):
    poison, reserved = dead_letters["poison"], dead_letters["reserved"]

    out = dlq("discard", str(poison.pk), str(reserved.pk), "--reason", "fixed by hand")

    assert out.endswith("2 discarded, 0 skipped.\n")
    assert set(DeadLetter.objects.filter(status="DISCARDED").values_list("pk", flat=True)) == {poison.pk, reserved.pk}
    actions = DeadLetterAction.objects.all()
    assert {(a.dead_letter_id, a.kind, a.actor, a.reason) for a in actions} == {
        (poison.pk, "discard", CLI_ACTOR, "fixed by hand"),
        (reserved.pk, "discard", CLI_ACTOR, "fixed by hand"),
    }
    assert len({a.batch for a in actions}) == 1


def test_discard_all_takes_the_pending_dead_letters_the_filters_match(dead_letters):
    garbled = dead_letters["garbled"]

    out = dlq("discard", "--all", "--failure-reason", "undecodable", "--reason", "garbage from a test producer")

    assert out.endswith("1 discarded, 0 skipped.\n")
    assert list(DeadLetter.objects.filter(status="DISCARDED").values_list("pk", flat=True)) == [garbled.pk]
    assert DeadLetterAction.objects.get().reason == "garbage from a test producer"


@pytest.mark.parametrize("reason", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_discard_without_a_reason_is_refused_and_changes_nothing(dead_letters, reason):
    poison = dead_letters["poison"]
    args = ["discard", str(poison.pk)] + ([] if reason is None else ["--reason", reason])

    with pytest.raises(CommandError, match="a reason is required"):
        dlq(*args)

    assert DeadLetter.objects.get(pk=poison.pk).status == "PENDING"
    assert not DeadLetterAction.objects.exists()


@pytest.mark.parametrize("action", ["retry", "discard"])
def test_unknown_ids_are_refused_and_nothing_is_changed(dead_letters, action):
    poison = dead_letters["poison"]
    missing = DeadLetter.objects.order_by("-pk").first().pk + 100

    because = ["--reason", "cleanup"] if action == "discard" else []

    with pytest.raises(CommandError, match=f"no dead letter with id {missing}; nothing was changed"):
        dlq(action, str(poison.pk), str(missing), *because)  # one typo spoils the batch: nothing half-done
    with pytest.raises(CommandError, match=f"no dead letter with id {missing}"):
        dlq(action, str(missing), *because)

    assert DeadLetter.objects.get(pk=poison.pk).status == "PENDING"
    assert not DeadLetterAction.objects.exists()


def test_show_of_an_unknown_id_is_refused(dead_letters):
    with pytest.raises(CommandError, match="no dead letter with id 987654"):
        dlq("show", "987654")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--since", "yesterday"], "'yesterday' is not an ISO date or datetime"),
        (["list", "--since", "2024-13-40"], "'2024-13-40' is not an ISO date or datetime"),
        (["list", "--status", "LOST"], "'LOST' is not a status; use one of PENDING, RETRIED, DISCARDED"),
        (["list", "--reason", "bad luck"], "'bad luck' is not a reason"),
        (["list", "--limit", "0"], "--limit must be at least 1"),
        (["retry", "--all", "--status", "nope"], "'nope' is not a status"),
        (["retry"], "name the dead letter ids to act on, or use --all"),
        (["retry", "1", "--all"], "name dead letter ids or use --all, not both"),
        (["retry", "1", "--group", "probe"], "filters apply only with --all: --group"),
        (["discard", "1", "--failure-reason", "oversize", "--reason", "x"], "filters apply only with --all: --failure"),
        (["retry", "abc"], "invalid int value: 'abc'"),
        (["show"], "the following arguments are required: ID"),
        ([], "the following arguments are required: {list,show,retry,discard,edit}"),
    ],
    ids=[
        "since-word",
        "since-impossible-date",
        "status",
        "reason",
        "limit",
        "all-status",
        "no-ids",
        "ids-and-all",
        "filters-without-all",
        "discard-filters-without-all",
        "id-not-a-number",
        "show-without-id",
        "no-action",
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(dead_letters, args, message):
    with pytest.raises(CommandError, match=message.replace("{", r"\{").replace("}", r"\}")):
        dlq(*args)

    assert not DeadLetterAction.objects.exists()
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"PENDING"}


def test_since_accepts_a_datetime_with_or_without_a_time_zone(dead_letters):
    later = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)

    assert listed_ids("--since", later.isoformat()) == set()
    assert listed_ids("--since", timezone.make_naive(later - timedelta(hours=2)).isoformat()) == {
        d.pk for d in dead_letters.values()
    }
