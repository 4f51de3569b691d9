"""A consumer's health record in Redis: its key and its contents, declared once.

Each running consumer writes its record every ``HEALTH_TTL_SECONDS / 3`` with a
``HEALTH_TTL_SECONDS`` expiry, so a record that is gone means the consumer is
gone; ``manage.py consumer_health`` reads them. One record per consumer process,
whatever partitions it reads: the keys carry the bus's hash tag (``bus_tag``),
so one MGET reads them all on a Redis Cluster too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from eventing.transport.streams import bus_tag

# A health record older than this means the consumer is gone.
HEALTH_TTL_SECONDS = 30
_PREFIX = "eventing:health"


def health_key(*, stream: str, group: str, consumer_id: str) -> str:
    """The record of one consumer of ``group`` on the bus of ``stream`` (settings.EVENTING_STREAM)."""
    return f"{_PREFIX}:{bus_tag(stream)}:{group}:{consumer_id}"


def health_pattern(*, stream: str, group: str | None = None) -> str:
    """A SCAN pattern for the records of one group, or of every group, on the bus of ``stream``."""
    return health_key(stream=stream, group=group or "*", consumer_id="*")


def parse_health_key(key: str, *, stream: str) -> tuple[str, str]:
    """(group, consumer id) of a record's key."""
    group, consumer_id = key.removeprefix(f"{_PREFIX}:{bus_tag(stream)}:").split(":", 1)
    return group, consumer_id


@dataclass(frozen=True)
class HealthRecord:
    ready: bool
    reason: str
    at: str
    processed: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> HealthRecord:
        doc = json.loads(raw)
        return cls(ready=doc["ready"], reason=doc["reason"], at=doc["at"], processed=doc["processed"])
