"""Edit before retry: an operator with the edit permission corrects a dead letter's event, it is validated
against its schema, delivered again to its own group, and the audit keeps the original, the diff and who."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from eventing.contract.errors import PermanentError
from eventing.models import DeadLetter, DeadLetterAction
from eventing.services import dead_letter_envelope_text
from orders.models import CatalogItem
from tests.eventing import test_failures
from tests.eventing.conftest import staff_client
from tests.eventing.test_consumer import stock_added, xadd
from tests.eventing.test_failures import run

pytestmark = pytest.mark.django_db(transaction=True)

probe = test_failures.probe
fast_retries = test_failures.fast_retries


@pytest.fixture
def poison(redis_client, stream, probe) -> DeadLetter:
    """A dead letter of the probe group: its handler refuses skus that start with POISON."""
    probe["error"] = PermanentError("skus starting with POISON are refused")
    xadd(redis_client, stream, stock_added("POISON-1"))
    run()
    return DeadLetter.objects.get(consumer_group="probe")


def corrected(dead_letter: DeadLetter, **data: object) -> str:
    envelope = json.loads(dead_letter_envelope_text(dead_letter=dead_letter))
    envelope["data"].update(data)
    return json.dumps(envelope, indent=2)


@pytest.fixture
def editor(db):
    user = get_user_model().objects.create_user(username="fixer", is_staff=True)
    return staff_client(user, "view_deadletter", "edit_deadletter")


def edit_url(dead_letter: DeadLetter) -> str:
    return reverse("admin:eventing_deadletter_edit", args=[dead_letter.pk])


def test_a_corrected_event_is_validated_delivered_to_its_group_and_audited(editor, poison):
    page = editor.get(reverse("admin:eventing_deadletter_change", args=[poison.pk])).content.decode()
    assert edit_url(poison) in page and "Correct and retry" in page
    form = editor.get(edit_url(poison)).content.decode()
    assert "POISON-1" in form and poison.event_id in form

    response = editor.post(
        edit_url(poison), {"envelope": corrected(poison, sku="FIXED-1"), "reason": "the sku was mistyped upstream"}
    )

    assert response.status_code == 302
    poison.refresh_from_db()
    assert poison.status == DeadLetter.Status.RETRIED
    [audit] = DeadLetterAction.objects.filter(dead_letter=poison)
    assert (audit.kind, audit.actor, audit.reason) == ("edit", "fixer", "the sku was mistyped upstream")
    assert '"sku": "POISON-1"' in audit.original
    assert '-    "sku": "POISON-1"' in audit.diff and '+    "sku": "FIXED-1"' in audit.diff
    run()  # the probe group, and only it, gets the corrected event
    assert CatalogItem.objects.filter(sku="probe:FIXED-1").exists()
    assert DeadLetter.objects.count() == 1
    trail = editor.get(reverse("admin:eventing_deadletter_change", args=[poison.pk])).content.decode()
    assert "edit-diff" in trail and "FIXED-1" in trail


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda dl: "{not json", "not a valid event"),
        (lambda dl: corrected(dl, quantity="many"), "not a valid event"),
        (lambda dl: corrected(dl, unexpected=1), "not a valid event"),
        (lambda dl: corrected(dl).replace(dl.event_id, "6f1c1a52-5a0e-4d55-9c2c-1f6f0f8b2a01"), "must stay"),
        (lambda dl: dead_letter_envelope_text(dead_letter=dl), "Nothing was changed"),
    ],
    ids=["not-json", "wrong-type", "undeclared-field", "new-id", "unchanged"],
)
def test_an_edit_that_is_not_a_valid_event_changes_nothing(editor, poison, edit, error):
    response = editor.post(edit_url(poison), {"envelope": edit(poison), "reason": "try"})

    assert response.status_code == 200
    assert error in response.content.decode()
    poison.refresh_from_db()
    assert poison.status == DeadLetter.Status.PENDING
    assert not DeadLetterAction.objects.exists()


def test_editing_needs_its_own_permission(poison):
    retrier = staff_client(
        get_user_model().objects.create_user(username="retrier", is_staff=True), "view_deadletter", "retry_deadletter"
    )
    assert (
        "Correct and retry"
        not in retrier.get(reverse("admin:eventing_deadletter_change", args=[poison.pk])).content.decode()
    )
    assert retrier.get(edit_url(poison)).status_code == 403
    assert retrier.post(edit_url(poison), {"envelope": corrected(poison, sku="X-1"), "reason": "r"}).status_code == 403


def test_the_cli_dumps_the_envelope_and_applies_an_edited_file(poison, tmp_path):
    out = StringIO()
    call_command("dlq", "edit", str(poison.pk), "--dump", stdout=out)
    envelope = json.loads(out.getvalue())
    envelope["data"]["sku"] = "CLI-1"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(envelope))

    with pytest.raises(CommandError, match="a reason is required"):
        call_command("dlq", "edit", str(poison.pk), "--file", str(edited))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**envelope, "data": {**envelope["data"], "quantity": "x"}}))
    with pytest.raises(CommandError, match="not edited: The edited envelope is not a valid event"):
        call_command("dlq", "edit", str(poison.pk), "--file", str(bad), "--reason", "typo")

    out = StringIO()
    call_command("dlq", "edit", str(poison.pk), "--file", str(edited), "--reason", "typo", stdout=out)
    assert "corrected and re-delivered to probe" in out.getvalue()
    run()
    assert CatalogItem.objects.filter(sku="probe:CLI-1").exists()
    out = StringIO()
    call_command("dlq", "show", str(poison.pk), stdout=out)
    assert '+    "sku": "CLI-1"' in out.getvalue()
