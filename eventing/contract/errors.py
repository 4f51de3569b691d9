"""The errors of the event contract, and the one error for a bad declaration.

Every ``EventError`` names its dead-letter reason, taken from
``DeadLetterReason`` (which ``DeadLetter.Reason`` is), so the labels are
written once.
"""

from django.db import models


class DeadLetterReason(models.TextChoices):
    """Why an event was dead-lettered. Labels equal the stored values, so the admin's wording works
    in `manage.py dlq --reason`."""

    UNDECODABLE = "undecodable", "undecodable"
    INVALID = "invalid event", "invalid event"
    UNKNOWN_TYPE = "unknown type", "unknown type"
    UNSUPPORTED_VERSION = "unsupported version", "unsupported version"
    OVERSIZE = "oversize", "oversize"
    PERMANENT_ERROR = "permanent error", "permanent error"
    MAX_ATTEMPTS = "max attempts", "max attempts"


class DeclarationError(Exception):
    """A declaration of the bus is wrong: an event type, upcaster, consumer, handler, projection or
    state check declared twice or inconsistently, or a handler for an undeclared consumer. Raised at
    import time, so a typo stops the process before it reads anything."""


class EventError(Exception):
    """An event or envelope does not match the contract. ``reason`` names the
    kind of failure, as recorded on a dead letter."""

    reason: str = DeadLetterReason.INVALID


class UndecodableEvent(EventError):
    reason = DeadLetterReason.UNDECODABLE


class OversizeEvent(UndecodableEvent):
    reason = DeadLetterReason.OVERSIZE


class InvalidEvent(EventError):
    reason = DeadLetterReason.INVALID


class UnknownEventType(EventError):
    reason = DeadLetterReason.UNKNOWN_TYPE


class UnsupportedVersion(EventError):
    reason = DeadLetterReason.UNSUPPORTED_VERSION


class PermanentError(Exception):
    """Raised by a handler when the event can never be applied (retrying cannot
    help): the event is dead-lettered on its first delivery."""
