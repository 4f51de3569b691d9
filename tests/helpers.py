"""Helpers for driving the bus in-process: publish what is pending and run
consumers until the whole cascade of events has settled."""

import time

import pytest

from eventing.consumer.runner import StreamConsumer
from eventing.contract import consumers
from eventing.contract.consumers import Consumer
from eventing.transport.client import get_redis
from eventing.transport.relay import publish_pending

ALL_CONSUMERS = ("inventory", "orders", "projections")


def pump(*names: str, timeout: float = 15.0) -> int:
    """Publish pending outbox rows and run the named consumers (default: all)
    round after round until a round handles nothing. Returns entries handled."""
    consumers = [StreamConsumer(name=name, block_ms=5) for name in names or ALL_CONSUMERS]
    deadline = time.monotonic() + timeout
    total = 0
    while time.monotonic() < deadline:
        publish_pending(client=get_redis(), batch_size=500, grace_seconds=0)
        before = sum(c.processed for c in consumers)
        for consumer in consumers:
            consumer.run_until_idle()
        handled = sum(c.processed for c in consumers) - before
        total += handled
        if handled == 0:
            return total
    raise TimeoutError(f"events still flowing after {timeout}s")


def scratch_consumer(monkeypatch: pytest.MonkeyPatch, name: str) -> Consumer:
    """Declare a consumer for one test: its declaration and its handlers are forgotten after it."""
    monkeypatch.setattr(consumers, "_HANDLERS", {k: list(v) for k, v in consumers._HANDLERS.items()})
    monkeypatch.setattr(consumers, "_CONSUMERS", dict(consumers._CONSUMERS))
    return consumers.declare_consumer(name, description=f"the test consumer {name!r}")
