import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from django.db import models

from eventing.contract.context import MAX_ID_LENGTH
from eventing.contract.errors import DeadLetterReason
from eventing.contract.events import MAX_TYPE_LENGTH


class OutboxEvent(models.Model):
    """An event committed with the change that caused it, waiting to be (or
    already) published to its stream. The auto-increment id keeps publication
    in commit order."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=MAX_TYPE_LENGTH)
    stream = models.CharField(max_length=200)
    payload = models.TextField(help_text="The envelope as JSON.")
    occurred_at = models.DateTimeField()
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="outbox_unpublished", condition=models.Q(published_at__isnull=True)),
            # Pruning deletes the oldest published rows first (eventing.transport.retention); republish_lost
            # reads the rows published since a point in time. Published rows only: an unpublished row costs
            # its INSERT no entry here, and both queries compare published_at, which implies it is set.
            models.Index(
                fields=["published_at"], name="outbox_published_at", condition=models.Q(published_at__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class ProcessedEvent(models.Model):
    """The inbox: which consumer has applied which event. Written in the same
    transaction as the handler's effect, so a redelivery is recognised."""

    consumer = models.CharField(max_length=100)
    event_id = models.UUIDField()
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Led by the event id, the unique key also serves a timeline, which asks who applied its events by
        # event id alone. One index on the random event id, not two: each is a random page written per row,
        # and they were most of a consumer's commit (bench/consumer_throughput.py, transactional path).
        constraints = [models.UniqueConstraint(fields=["event_id", "consumer"], name="inbox_once_per_consumer")]
        indexes = [
            # Pruning deletes the oldest rows first (eventing.transport.retention).
            models.Index(fields=["processed_at"], name="inbox_processed_at"),
        ]

    def __str__(self) -> str:
        return f"{self.consumer} {self.event_id}"


class DeadLetter(models.Model):
    """An event one consumer group gave up on, kept with everything needed to
    understand it, and retried or discarded from the admin or `manage.py dlq`."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "pending a decision"
        RETRIED = "RETRIED", "retried"
        DISCARDED = "DISCARDED", "discarded"

    # The reason labels are declared once, in the contract.
    Reason = DeadLetterReason

    stream = models.CharField(max_length=200)
    entry_id = models.CharField(max_length=40)
    event_id = models.CharField(max_length=64, blank=True, db_index=True)
    event_type = models.CharField(max_length=MAX_TYPE_LENGTH, blank=True)
    consumer_group = models.CharField(max_length=100)
    handler = models.CharField(max_length=300, blank=True)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    attempts = models.PositiveIntegerField()
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    error_class = models.CharField(max_length=300, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    payload = models.TextField(help_text="The stream entry's fields as JSON, exactly as read.")
    correlation_id = models.CharField(max_length=MAX_ID_LENGTH, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    dead_letter_entry_id = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Dead-lettering the same delivery twice (a crash before the ack) records it once.
            models.UniqueConstraint(fields=["consumer_group", "stream", "entry_id"], name="dead_letter_once"),
        ]
        permissions = [
            ("retry_deadletter", "Can retry dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
            ("edit_deadletter", "Can correct a dead letter's event and retry it"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.consumer_group}: {self.event_type or '?'} {self.event_id or self.entry_id} ({self.reason})"

    @staticmethod
    def payload_of(fields: Mapping[bytes, bytes]) -> str:
        """A stream entry's fields as ``payload``: a JSON object of name: value, each a string where its
        bytes are UTF-8 and ``{"base64": "…"}`` where they are not; a list of [name, value] pairs
        instead when a name is not UTF-8 (an object's keys are strings). ``entry_fields`` reverses it."""
        pairs = [(_text_or_base64(name), _text_or_base64(value)) for name, value in fields.items()]
        if all(isinstance(name, str) for name, _ in pairs):
            return json.dumps(dict(pairs))
        return json.dumps([list(pair) for pair in pairs])

    def entry_fields(self) -> dict[bytes, bytes]:
        """The entry's fields as they were read, byte for byte. Raises ValueError when the payload is not
        one ``payload_of`` wrote."""
        try:
            doc = json.loads(self.payload)
            pairs = doc.items() if isinstance(doc, dict) else doc
            return {_bytes_of(name): _bytes_of(value) for name, value in pairs}
        except (TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise ValueError(f"the payload is not a stream entry's fields ({type(exc).__name__}: {exc})") from None


def _text_or_base64(raw: bytes) -> str | dict[str, str]:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def _bytes_of(part: Any) -> bytes:
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, dict) and set(part) == {"base64"}:
        return base64.b64decode(part["base64"], validate=True)
    raise TypeError(f"a field is a string or {{'base64': ...}}, not {part!r:.80}")


class DeadLetterAction(models.Model):
    """The audit trail: who retried or discarded which dead letter, when, and what came of it."""

    class Kind(models.TextChoices):
        RETRY = "retry"
        DISCARD = "discard"
        EDIT = "edit", "edit and retry"

    dead_letter = models.ForeignKey(DeadLetter, on_delete=models.CASCADE, related_name="actions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.CharField(max_length=150, help_text="The user, or the command that acted.")
    reason = models.TextField(blank=True)
    result = models.TextField()
    batch = models.UUIDField(help_text="Shared by the entries one action was applied to.")
    original = models.TextField(blank=True, help_text="An edit's starting point: the event's envelope as it failed.")
    diff = models.TextField(blank=True, help_text="An edit's change to the envelope, as a unified diff.")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.kind} of {self.dead_letter_id} by {self.actor}"


class EventLogEntry(models.Model):
    """Only the admin's entry point for the event log, which lives in MongoDB (eventing.readside.event_log.EventRecord).

    Django's admin lists models, so this one exists to give the log a page and a view permission. It is
    unmanaged and its table never exists: nothing may query it through the ORM.
    """

    # The event's id, as in the log; declared so Django does not add an auto-increment key it would never use.
    id = models.CharField(primary_key=True, max_length=64)

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "event log"
        verbose_name_plural = "event log"

    def __str__(self) -> str:
        return self.id


class BusStatusPage(models.Model):
    """Only the admin's entry point for the bus status page (eventing.monitoring.status): streams, groups,
    lag, pending entries, consumers and dead letters. Unmanaged, with no table, like EventLogEntry."""

    id = models.CharField(primary_key=True, max_length=1)

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "bus status"
        verbose_name_plural = "bus status"

    def __str__(self) -> str:
        return "bus status"


class ConsumerFence(models.Model):
    """The newest lease token that has written for a group's partition. A consumer writes its token here in
    the same transaction as its effects, and the write is refused when a newer token is already here: a
    process that lost its lease (paused, cut off) cannot commit after the new owner has begun."""

    group = models.CharField(max_length=100)
    stream = models.CharField(max_length=200)
    token = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "stream"], name="one_fence_per_partition")]

    def __str__(self) -> str:
        return f"{self.group} {self.stream} #{self.token}"
