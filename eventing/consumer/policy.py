"""The failure policy: what a failed delivery means and what happens next.

Pure logic over an error and an attempt count, with no I/O, so it is tested
without Redis or a database (tests/eventing/test_policy.py):

- transient (a backing service unreachable or timing out): the event is not at
  fault; it stays pending, never counts toward the dead-letter limit, and the
  consumer backs off until the service is back;
- permanent (a ``PermanentError``, or an error the handler declared permanent):
  dead-lettered on the first delivery;
- anything else: retried with exponential backoff between deliveries, and
  dead-lettered once it has failed ``max_attempts`` times.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError
from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, ServerSelectionTimeoutError

from eventing.contract.errors import DeadLetterReason, PermanentError
from eventing.transport.client import CLUSTER_UNAVAILABLE_ERRORS

# Failures of the infrastructure rather than of the event. The one list: the
# handlers' errors and the consumer loop's are classified by it alike.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionFailure,
    AutoReconnect,
    ServerSelectionTimeoutError,
    ExecutionTimeout,
    *CLUSTER_UNAVAILABLE_ERRORS,
)


class TransientFailure(Exception):
    """Processing stopped because a backing service is unavailable; the entries stay pending."""


class Kind(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    RETRYABLE = "retryable"


class Next(enum.Enum):
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


def classify(error: BaseException, *, declared_permanent: tuple[type[BaseException], ...] = ()) -> Kind:
    if isinstance(error, TRANSIENT_ERRORS):
        return Kind.TRANSIENT
    if isinstance(error, (PermanentError, *declared_permanent)):
        return Kind.PERMANENT
    return Kind.RETRYABLE


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_ms: int
    max_ms: int

    @classmethod
    def for_consumer(cls, name: str) -> RetryPolicy:
        return cls(
            max_attempts=settings.EVENTING_MAX_ATTEMPTS_BY_CONSUMER.get(name, settings.EVENTING_MAX_ATTEMPTS),
            base_ms=settings.EVENTING_RETRY_BASE_MS,
            max_ms=settings.EVENTING_RETRY_MAX_MS,
        )

    def backoff_ms(self, attempts: int) -> float:
        """How long after its last delivery an event that failed ``attempts`` times is delivered again."""
        return float(min(self.base_ms * 2 ** max(attempts - 1, 0), self.max_ms))

    def next_step(self, *, kind: Kind, attempts: int) -> Next:
        """After the ``attempts``-th failure (counted, so never transient): retry, or give up."""
        if kind is Kind.TRANSIENT:
            raise ValueError("a transient failure is not counted; the entry just stays pending")
        if kind is Kind.PERMANENT or attempts >= self.max_attempts:
            return Next.DEAD_LETTER
        return Next.RETRY

    @staticmethod
    def reason(kind: Kind) -> DeadLetterReason:
        """The dead-letter reason of a handler's failure of this kind."""
        return DeadLetterReason.PERMANENT_ERROR if kind is Kind.PERMANENT else DeadLetterReason.MAX_ATTEMPTS


@dataclass(frozen=True)
class Failure:
    """Why and how often one delivery failed: what a dead letter records."""

    reason: str
    error_class: str
    error_message: str
    traceback: str
    handler: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime

    @classmethod
    def first_and_final(cls, *, reason: str, error: BaseException, message: str, traceback: str = "") -> Failure:
        """An entry that can never be applied, refused on its first delivery."""
        now = datetime.now(UTC)
        return cls(
            reason=reason,
            error_class=type(error).__name__,
            error_message=message,
            traceback=traceback,
            handler="",
            attempts=1,
            first_failed_at=now,
            last_failed_at=now,
        )
