"""Names of the bus's streams and of every key kept beside them, declared once.

The bus is ``settings.EVENTING_STREAM`` split into ``settings.EVENTING_PARTITIONS`` streams. With one
partition the stream is the setting itself, as it always was; with P of them partition i is
``{<stream>:p<i>}``, braces included, so the whole name is its Redis Cluster hash tag and the partitions
spread over the cluster's slots. Every key used together with a partition — its retry streams, its
dead-letter stream, the failure records of its groups, the relay's run-id record — embeds the
partition's name, so it carries the same tag and lands in the same slot: no command crosses slots.

An event goes to the partition of its aggregate id (:func:`partition_of`, a crc32, stable across
processes and machines, unlike Python's salted ``hash``), so all the events of one order, reservation or
stock item are in one stream, in the order they were published.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

from eventing.transport.client import is_cluster_url

RETRY_MARK = ":retry:"
DEAD_LETTER_SUFFIX = ":dead-letters"


def partition_count() -> int:
    return int(settings.EVENTING_PARTITIONS)


def untagged(stream: str) -> str:
    """``stream`` without braces: the base of its partitions' names (each brings its own tag)."""
    return stream.replace("{", "").replace("}", "")


def hash_tag(key: str) -> str | None:
    """What Redis Cluster hashes of ``key``: the text between the first ``{`` and the next ``}``, when
    not empty; None when the whole key is hashed."""
    start = key.find("{")
    if start == -1:
        return None
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return None
    return key[start + 1 : end]


def partition_stream(index: int, *, stream: str | None = None, partitions: int | None = None) -> str:
    """The name of partition ``index`` of ``stream`` (default: settings.EVENTING_STREAM)."""
    stream = stream or settings.EVENTING_STREAM
    if (partitions or partition_count()) == 1:
        return stream
    return f"{{{untagged(stream)}:p{index}}}"


def partition_streams(*, stream: str | None = None, partitions: int | None = None) -> list[str]:
    """Every partition stream of the bus, in partition order."""
    count = partitions or partition_count()
    return [partition_stream(index, stream=stream, partitions=count) for index in range(count)]


def partition_of(aggregate_id: str, *, partitions: int | None = None) -> int:
    """The partition of an aggregate: crc32 of its id modulo P. Changing P moves most aggregates,
    which is why repartitioning drains the bus first (docs/scaling.md)."""
    return zlib.crc32(aggregate_id.encode("utf-8", "surrogatepass")) % (partitions or partition_count())


def stream_for(aggregate_id: str, *, stream: str | None = None, partitions: int | None = None) -> str:
    """The partition stream the events of ``aggregate_id`` go to."""
    count = partitions or partition_count()
    return partition_stream(partition_of(aggregate_id, partitions=count), stream=stream, partitions=count)


def is_stream_of_bus(name: str, *, stream: str | None = None) -> bool:
    """Whether ``name`` is a partition of ``stream``'s bus under some partition count, this one or another
    (the stream itself, or ``{<stream>:p<i>}``)."""
    stream = stream or settings.EVENTING_STREAM
    base = untagged(stream)
    if name in (stream, base, f"{{{base}}}"):
        return True
    prefix = f"{{{base}:p"
    return name.startswith(prefix) and name.endswith("}") and name[len(prefix) : -1].isdigit()


def bus_tag(stream: str | None = None) -> str:
    """The hash tag of keys that belong to the whole bus rather than to one partition (consumers'
    health records): the stream's own when it has one, else the stream's name in braces."""
    stream = stream or settings.EVENTING_STREAM
    return stream if hash_tag(stream) is not None else f"{{{untagged(stream)}}}"


def dead_letter_stream(stream: str) -> str:
    """Where every group's dead letters of ``stream`` are copied (for tools; the table is the record)."""
    return f"{base_stream(stream)}{DEAD_LETTER_SUFFIX}"


def retry_stream(stream: str, group: str) -> str:
    """Read by ``group`` alone: a dead letter retried from the admin goes back to its own group only."""
    return f"{base_stream(stream)}{RETRY_MARK}{group}"


def run_id_key(stream: str) -> str:
    """Where the relay keeps the run id of the Redis it last saw holding ``stream``, in the stream's slot;
    a different one means that server restarted."""
    return f"eventing:relay:{stream}:redis-run-id"


def base_stream(stream: str) -> str:
    """The partition stream a retry stream belongs to (a partition stream is its own base)."""
    return stream.split(RETRY_MARK, 1)[0]


def retry_target(stream: str, group: str, fields: Mapping[bytes, bytes]) -> str:
    """The retry stream a dead letter of ``group``, read from ``stream``, is delivered to again: its own
    partition's while that partition exists; after a repartitioning, the partition its aggregate maps to
    now (read from the entry's envelope; partition 0 when the entry has none)."""
    partition = base_stream(stream)
    current = partition_streams()
    if partition in current:
        return retry_stream(partition, group)
    try:
        aggregate_id = json.loads(fields[b"data"])["aggregate_id"]
    except (KeyError, TypeError, ValueError, RecursionError):
        return retry_stream(current[0], group)
    return retry_stream(stream_for(str(aggregate_id)), group)


def check_partitions(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """System check: a partition count that makes no bus, and stream names a Redis Cluster would scatter."""
    errors: list[checks.CheckMessage] = []
    if partition_count() < 1:
        errors.append(
            checks.Error(
                f"EVENTING_PARTITIONS must be at least 1, not {partition_count()}.",
                hint="1 keeps the single stream EVENTING_STREAM; more split the bus (docs/scaling.md).",
                id="eventing.E003",
            )
        )
        return errors
    if not is_cluster_url(settings.REDIS_URL):
        return errors
    untagged_streams = [stream for stream in partition_streams() if hash_tag(stream) is None]
    if untagged_streams:
        errors.append(
            checks.Error(
                f"REDIS_URL names a Redis Cluster and the stream {untagged_streams[0]!r} has no hash tag: its retry "
                "stream, dead-letter stream and failure records would land in other slots than the stream, and the "
                "commands that use them together would fail with CROSSSLOT.",
                hint=f"Write EVENTING_STREAM with braces, {bus_tag()!r}, or set EVENTING_PARTITIONS above 1 (each "
                "partition has its own tag).",
                id="eventing.E004",
            )
        )
    if not settings.CACHE_URL:
        errors.append(
            checks.Warning(
                "REDIS_URL names a Redis Cluster and CACHE_URL is not set: the API's rate limits are counted in each "
                "process's memory (Django's RedisCache cannot use a cluster), so a client gets the limit once per "
                "web worker.",
                hint="Set CACHE_URL to a standalone Redis, e.g. redis://cache-host:6379/0.",
                id="eventing.W001",
            )
        )
    return errors
