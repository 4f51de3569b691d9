"""Trimming streams without losing unread events.

An entry may go only once every consumer group of its stream has acked it:
it is older than the group's oldest pending entry and no newer than the last
one delivered to the group. XTRIM MINID removes exactly the entries below the
lowest such bound; a plain MAXLEN could drop events a group has not read.
"""

import logging

import redis

from eventing.transport.client import RedisClient, is_missing_key
from eventing.transport.streams import retry_stream

logger = logging.getLogger(__name__)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def safe_min_id(client: RedisClient, stream: str) -> str | None:
    """The lowest id every group still needs, or None when no group reads the stream."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if not is_missing_key(exc):
            raise
        return None  # no such stream
    if not groups:
        return None
    bounds: list[str] = []
    for group in groups:
        pending = client.xpending(stream, group["name"])
        if pending["pending"]:
            bounds.append(str(pending["min"]))
        else:
            ms, seq = _id_key(group["last-delivered-id"])
            bounds.append(f"{ms}-{seq + 1}")
    return min(bounds, key=_id_key)


def trim_stream(client: RedisClient, stream: str) -> int:
    """Remove the entries of ``stream`` that every group has acked. Returns how many went."""
    min_id = safe_min_id(client, stream)
    if min_id is None:
        return 0
    removed = client.xtrim(stream, minid=min_id, approximate=False)
    if removed:
        logger.info("trimmed %d acked entr(y/ies) from %s below %s", removed, stream, min_id)
    return removed


def trim_streams(client: RedisClient, stream: str) -> dict[str, int]:
    """Trim ``stream`` and the retry streams of its groups. The dead-letter copy is left alone.

    The retry streams are named after the groups on ``stream`` (every group has one), not found by a
    SCAN, which on a cluster would walk every master's keys."""
    try:
        groups = sorted(str(group["name"]) for group in client.xinfo_groups(stream))
    except redis.ResponseError as exc:
        if not is_missing_key(exc):
            raise
        groups = []
    streams = [stream, *(retry_stream(stream, group) for group in groups)]
    return {name: trim_stream(client, name) for name in streams}
