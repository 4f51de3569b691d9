"""The metrics ``/metrics`` serves.

- **Counted where it happens** (``eventing.telemetry.metrics``), in the consumer and relay processes. With
  ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` sets it), every process of the machine writes them to that
  directory and the web server's ``/metrics`` adds them up.
- **Read at scrape time** from Redis and the database by ``BusCollector``: per group lag, pending entries,
  age of the oldest pending entry and consumers alive; stream length; outbox backlog and the age of its
  oldest row; dead letters by status and reason. One snapshot (``status.bus_status``) per scrape.

Labels are bounded: streams, groups and reasons are declared; no event id or correlation id is a label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from eventing.monitoring.status import bus_status

logger = logging.getLogger(__name__)


class BusCollector(Collector):
    """The bus's state, read from Redis and the database when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("eventing_status_up", "1 when the bus status could be read for this scrape.")
        try:
            status = bus_status()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer; the failure is itself a metric
            logger.warning("bus status for /metrics: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        group_labels = ["stream", "group"]
        lag = GaugeMetricFamily("eventing_group_lag", "Entries not yet delivered to the group.", labels=group_labels)
        pending = GaugeMetricFamily(
            "eventing_group_pending", "Entries delivered to the group and not acked.", labels=group_labels
        )
        oldest = GaugeMetricFamily(
            "eventing_group_oldest_pending_age_seconds",
            "Age of the group's oldest unacked entry (0 when none).",
            labels=group_labels,
        )
        alive = GaugeMetricFamily(
            "eventing_group_consumers_alive",
            "Consumer processes of the group with a fresh heartbeat.",
            labels=group_labels,
        )
        group_dlq = GaugeMetricFamily(
            "eventing_group_dead_letters", "Dead letters of the group pending a decision.", labels=group_labels
        )
        length = GaugeMetricFamily("eventing_stream_length", "Entries in the stream.", labels=["stream"])
        for stream in status.streams:
            length.add_metric([stream.name], stream.length)
            for group in stream.groups:
                labels = [stream.name, group.name]
                if group.lag is not None:
                    lag.add_metric(labels, group.lag)
                pending.add_metric(labels, group.pending)
                oldest.add_metric(labels, group.oldest_pending_age_seconds or 0.0)
                alive.add_metric(labels, group.alive)
                group_dlq.add_metric(labels, group.dead_letters)
        yield from (lag, pending, oldest, alive, group_dlq, length)
        backlog = GaugeMetricFamily("eventing_outbox_backlog", "Outbox rows not yet published.")
        backlog.add_metric([], status.outbox.backlog)
        backlog_age = GaugeMetricFamily(
            "eventing_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0 when none)."
        )
        backlog_age.add_metric([], status.outbox.oldest_age_seconds or 0.0)
        dead_letters = GaugeMetricFamily(
            "eventing_dead_letters", "Dead letters by status and reason.", labels=["status", "reason"]
        )
        for (letter_status, reason), count in sorted(status.dead_letters.items()):
            dead_letters.add_metric([letter_status, reason], count)
        yield from (backlog, backlog_age, dead_letters)


def exposition() -> bytes:
    """Every metric of this machine's processes (multiprocess mode) or of this process, and the bus's state."""
    bus = CollectorRegistry()
    bus.register(BusCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
        return generate_latest(processes) + generate_latest(bus)
    return generate_latest(REGISTRY) + generate_latest(bus)
