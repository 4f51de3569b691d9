"""What the consumer and relay processes count, for Prometheus (served by ``/metrics``, see
eventing.monitoring.metrics).

Labels are bounded: consumer names are declared, event types are those the contract knows (anything
else, such as a hostile entry's type, is counted as ``unknown``), reasons and failure kinds are the
contract's labels. No event id or correlation id is ever a label.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from eventing.contract.errors import UnknownEventType
from eventing.contract.events import event_class

# Handler latencies run from a tenth of a millisecond (an idempotent projection in a batch) to seconds
# (a handler waiting on a slow service).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS_PROCESSED = Counter(
    "eventing_events_processed",
    "Events a consumer applied with its handlers (or found already applied).",
    ["consumer", "event_type"],
)
EVENTS_FAILED = Counter(
    "eventing_events_failed", "Failed deliveries of an event to a consumer.", ["consumer", "event_type", "kind"]
)
EVENTS_RETRIED = Counter(
    "eventing_events_retried", "Deliveries of an event that had failed before.", ["consumer", "event_type"]
)
EVENTS_DEAD_LETTERED = Counter(
    "eventing_events_dead_lettered", "Events a consumer gave up on.", ["consumer", "event_type", "reason"]
)
HANDLER_SECONDS = Histogram(
    "eventing_handler_seconds",
    "Time to apply one event in a consumer (a batch handler's time is shared by its events).",
    ["consumer", "event_type"],
    buckets=LATENCY_BUCKETS,
)
RELAY_PUBLISHED = Counter("eventing_relay_published", "Outbox rows the relay published.")
RELAY_PUBLISH_SECONDS = Histogram(
    "eventing_relay_publish_seconds", "Time of one pipelined publish of outbox rows to Redis.", buckets=LATENCY_BUCKETS
)


def event_type_label(event_type: str | None) -> str:
    """The label for an event type: the contract's names only, so a hostile entry cannot add series."""
    if not event_type:
        return "unknown"
    try:
        return event_class(event_type).TYPE
    except UnknownEventType:
        return "unknown"


def observe_each(series: Any, amounts: Sequence[float]) -> None:
    """``series.observe(amount)`` for each amount, a batch's worth at once: each bucket and the sum are added
    to once, not once per amount. It writes the counts prometheus-client's histogram keeps (``_buckets``,
    ``_sum``, ``_upper_bounds``, the version pinned; test_observe_each_counts_as_observe_does checks it) and
    observes one by one any other series (such as the bench's stand-in that records nothing)."""
    buckets, total, bounds = (getattr(series, name, None) for name in ("_buckets", "_sum", "_upper_bounds"))
    if buckets is None or total is None or bounds is None:
        for amount in amounts:
            series.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1  # the first bound at or above it, as observe() finds it
    total.inc(sum(amounts))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
