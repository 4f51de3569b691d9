"""The failure policy on its own: pure logic over an error and an attempt count, no Redis, no database."""

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError
from pymongo.errors import AutoReconnect

from config.settings import per_consumer_counts
from eventing.consumer.policy import Kind, Next, RetryPolicy, classify
from eventing.contract.errors import DeadLetterReason, PermanentError

POLICY = RetryPolicy(max_attempts=3, base_ms=500, max_ms=30_000)


class NotInStock(Exception):
    pass


@pytest.mark.parametrize(
    "error",
    [OperationalError("database is locked"), redis.ConnectionError("down"), AutoReconnect("primary stepped down")],
)
def test_an_unreachable_service_is_transient(error):
    assert classify(error) is Kind.TRANSIENT


def test_a_permanent_error_or_one_the_handler_declares_is_permanent():
    assert classify(PermanentError("never")) is Kind.PERMANENT
    assert classify(NotInStock(), declared_permanent=(NotInStock,)) is Kind.PERMANENT
    assert classify(NotInStock()) is Kind.RETRYABLE


def test_any_other_error_is_retryable_even_a_database_integrity_error():
    assert classify(ValueError("bug")) is Kind.RETRYABLE
    assert classify(IntegrityError("duplicate")) is Kind.RETRYABLE


def test_a_retryable_error_is_retried_until_max_attempts_then_dead_lettered():
    steps = [POLICY.next_step(kind=Kind.RETRYABLE, attempts=n) for n in (1, 2, 3, 4)]
    assert steps == [Next.RETRY, Next.RETRY, Next.DEAD_LETTER, Next.DEAD_LETTER]
    assert POLICY.reason(Kind.RETRYABLE) == DeadLetterReason.MAX_ATTEMPTS


def test_a_permanent_error_is_dead_lettered_on_the_first_attempt():
    assert POLICY.next_step(kind=Kind.PERMANENT, attempts=1) is Next.DEAD_LETTER
    assert POLICY.reason(Kind.PERMANENT) == DeadLetterReason.PERMANENT_ERROR


def test_a_transient_failure_is_never_counted():
    with pytest.raises(ValueError, match="not counted"):
        POLICY.next_step(kind=Kind.TRANSIENT, attempts=1)


def test_backoff_doubles_from_the_base_up_to_the_cap():
    assert [POLICY.backoff_ms(n) for n in (1, 2, 3, 4)] == [500, 1000, 2000, 4000]
    assert POLICY.backoff_ms(20) == 30_000
    assert POLICY.backoff_ms(0) == 500


def test_max_attempts_come_from_settings_per_consumer(settings):
    settings.EVENTING_MAX_ATTEMPTS = 5
    settings.EVENTING_MAX_ATTEMPTS_BY_CONSUMER = {"inventory": 2}
    assert RetryPolicy.for_consumer("inventory").max_attempts == 2
    assert RetryPolicy.for_consumer("orders").max_attempts == 5


def test_per_consumer_settings_read_the_documented_form_and_refuse_anything_else(monkeypatch):
    monkeypatch.setenv("EVENTING_MAX_ATTEMPTS_BY_CONSUMER", " inventory=3, orders = 8 ,")
    assert per_consumer_counts("EVENTING_MAX_ATTEMPTS_BY_CONSUMER") == {"inventory": 3, "orders": 8}
    monkeypatch.delenv("EVENTING_MAX_ATTEMPTS_BY_CONSUMER")
    assert per_consumer_counts("EVENTING_MAX_ATTEMPTS_BY_CONSUMER") == {}
    for wrong in ("inventory=3;orders=8", "inventory", "=3", "inventory=-1", "inventory=three"):
        monkeypatch.setenv("EVENTING_LINGER_MS_BY_CONSUMER", wrong)
        with pytest.raises(
            ImproperlyConfigured, match='write it as EVENTING_LINGER_MS_BY_CONSUMER="inventory=3,orders=8"'
        ):
            per_consumer_counts("EVENTING_LINGER_MS_BY_CONSUMER")
