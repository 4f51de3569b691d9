"""Helpers for driving the bus in-process: publish what is pending and run
consumers until the whole cascade of events has settled."""

import time

from eventing.consumer import StreamConsumer
from eventing.redis_client import get_redis
from eventing.relay import publish_pending

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
